"""A vLLM-like replica: continuous batching over a KV block pool, stepped by a fitted step model.

Mirrors vLLM V1's scheduler (`vllm/v1/core/sched/scheduler.py`) at the level that sets latency:
running requests are scheduled first (one token per decoding request, chunked prefill for the
rest within `max_num_batched_tokens`); when the KV pool cannot hold a step's new tokens, the
lowest-priority, latest-arrived running request is preempted by recompute (its blocks freed, it
goes back to waiting with prompt + output so far to prefill again); waiting requests start only
in a step without preemptions, highest priority first, while `max_num_seqs` and blocks allow.

Decoding requests are not touched per step: each is described by the step it started decoding
at, so a step costs O(1) plus the requests that start, finish or are preempted in it.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from autoscaling.simulator.step_model import StepModel
from serve_app.policy.recent_latency import RecentInterTokenTimes


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class EngineConfig:
    """The engine limits that shape scheduling (vLLM's names)."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    num_kv_blocks: int = 8518  # vLLM's allocation for llama2-7b AWQ on an H100 at 0.9 utilization
    block_size: int = 16

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "num_kv_blocks", "block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(eq=False)
class EngineRequest:
    """One request inside the engine; times are simulated seconds."""

    request_id: str
    prompt_len: int
    output_len: int
    priority: int = 0  # vLLM's convention: lower runs first
    arrival_s: float = 0.0
    seq: int = 0  # arrival order at the engine (ties in priority)
    computed: int = 0  # tokens with KV computed (while waiting or prefilling)
    generated: int = 0  # output tokens emitted (while waiting or prefilling)
    blocks: int = 0  # blocks held (while prefilling)
    chunk: int = 0  # tokens scheduled in the current step (while prefilling)
    first_token_s: float | None = None
    finish_s: float | None = None
    preemptions: int = 0
    # While decoding: the step it started decoding at and its computed / generated counts then.
    start_step: int = -1
    start_computed: int = 0
    start_generated: int = 0
    version: int = 0  # bumped on preemption so stale finish entries are skipped
    tag: object = field(default=None, repr=False)  # the caller's own handle

    def __post_init__(self) -> None:
        if self.prompt_len < 1 or self.output_len < 1:
            raise ValueError(f"request {self.request_id}: prompt_len and output_len must be >= 1")

    def order(self) -> tuple[int, int]:
        return (self.priority, self.seq)


class Replica:
    """The engine of one replica. Drive it with `add` + `start_if_idle`, and `complete_step` at `step_end_s`."""

    def __init__(self, replica_id: str, model: StepModel, config: EngineConfig) -> None:
        self.replica_id = replica_id
        self._model = model
        self._config = config
        self._bs = config.block_size
        self._waiting: list[tuple[int, int, EngineRequest]] = []  # heap on (priority, seq)
        self._prefilling: list[EngineRequest] = []
        self._decoding: dict[str, EngineRequest] = {}
        self._finish_heap: list[tuple[int, int, int, EngineRequest]] = []  # (step, seq, version, req)
        self._block_demand = [0] * self._bs  # decoding requests needing a new block, by step % block_size
        self._context_base = 0  # sum over decoding of (start_computed - start_step)
        self._used_blocks = 0
        self._step = 0  # index of the next (or current) step
        self._arrivals = 0
        self.step_end_s: float | None = None  # end of the running step; None while idle
        self.preemptions_total = 0
        self.steps_run = 0
        self.busy_s = 0.0
        # Each decoding request's inter-token time, per step, as the real replica keeps them.
        self._recent_inter_token = RecentInterTokenTimes()
        self._step_decoding = 0  # decoding requests in the step running now
        self._step_s = 0.0  # its duration

    # ---- state -----------------------------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self._decoding) + len(self._prefilling)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_requests(self) -> int:
        return self.num_running + self.num_waiting

    @property
    def kv_usage(self) -> float:
        return self._used_blocks / self._config.num_kv_blocks

    @property
    def used_blocks(self) -> int:
        return self._used_blocks

    # ---- input -----------------------------------------------------------------------------------
    def add(self, request: EngineRequest, now: float) -> None:
        """Queue a request; it joins the next step (call `start_if_idle` once arrivals at `now` are in)."""
        request.arrival_s = now
        request.seq = self._arrivals
        self._arrivals += 1
        heapq.heappush(self._waiting, (request.priority, request.seq, request))

    def start_if_idle(self, now: float) -> bool:
        """Start a step if none is running and there is work; True if one started (see `step_end_s`)."""
        if self.step_end_s is not None:
            return False
        self._start_step(now)
        return self.step_end_s is not None

    # ---- stepping --------------------------------------------------------------------------------
    def _decoding_blocks(self, req: EngineRequest) -> int:
        return _ceil_div(req.start_computed + self._step - req.start_step, self._bs)

    def _remove_decoding(self, req: EngineRequest) -> None:
        del self._decoding[req.request_id]
        self._used_blocks -= self._decoding_blocks(req)
        self._block_demand[(req.start_step - req.start_computed) % self._bs] -= 1
        self._context_base -= req.start_computed - req.start_step

    def _preempt(self, victim: EngineRequest) -> None:
        """Recompute preemption: free the victim's blocks; it waits to prefill prompt + output again."""
        if victim.request_id in self._decoding:
            elapsed = self._step - victim.start_step
            self._remove_decoding(victim)
            victim.generated = victim.start_generated + elapsed
        else:
            self._prefilling.remove(victim)
            self._used_blocks -= victim.blocks
        victim.computed, victim.blocks, victim.chunk = 0, 0, 0
        victim.version += 1
        victim.preemptions += 1
        self.preemptions_total += 1
        heapq.heappush(self._waiting, (victim.priority, victim.seq, victim))

    def _schedule(self) -> int:
        """Choose this step's work; returns its prefill tokens. Preempts when blocks run out."""
        free = self._config.num_kv_blocks - self._used_blocks
        budget = self._config.max_num_batched_tokens - len(self._decoding)
        for req in self._prefilling:
            req.chunk = max(0, min(req.prompt_len + req.generated - req.computed, budget))
            budget -= req.chunk
        preempted = False
        while True:
            demand = self._block_demand[self._step % self._bs] + sum(
                _ceil_div(r.computed + r.chunk, self._bs) - r.blocks for r in self._prefilling)
            if demand <= free or not (self._decoding or self._prefilling):
                break
            victim = max(list(self._decoding.values()) + self._prefilling, key=EngineRequest.order)
            free += victim.blocks if victim in self._prefilling else self._decoding_blocks(victim)
            self._preempt(victim)
            preempted = True
        self._used_blocks += self._block_demand[self._step % self._bs]
        for req in self._prefilling:
            held = _ceil_div(req.computed + req.chunk, self._bs)
            self._used_blocks += held - req.blocks
            req.blocks = held
        prefill_tokens = sum(r.chunk for r in self._prefilling)
        budget = self._config.max_num_batched_tokens - len(self._decoding) - prefill_tokens
        free -= demand
        while (not preempted and self._waiting and budget > 0
               and self.num_running < self._config.max_num_seqs):
            req = self._waiting[0][2]
            chunk = min(req.prompt_len + req.generated, budget)
            need = _ceil_div(chunk, self._bs)
            if need > free:
                break
            heapq.heappop(self._waiting)
            req.chunk, req.blocks = chunk, need
            self._prefilling.append(req)
            free -= need
            self._used_blocks += need
            budget -= chunk
            prefill_tokens += chunk
        return prefill_tokens

    def _start_step(self, now: float) -> None:
        if not (self._waiting or self._prefilling or self._decoding):
            self.step_end_s = None
            return
        prefill_tokens = self._schedule()
        n_dec = len(self._decoding)
        context = self._context_base + n_dec * (self._step + 1)
        context += sum(r.computed + r.chunk for r in self._prefilling)
        if not n_dec and not prefill_tokens:
            self.step_end_s = None  # only waiting requests that cannot start: nothing will free blocks
            return
        dt = self._model.step_time_s(n_dec, prefill_tokens, context)
        self.busy_s += dt
        self.step_end_s = now + dt
        self._step_decoding, self._step_s = n_dec, dt

    def recent_inter_token_s(self, now: float) -> float | None:
        """Mean inter-token time of the decoding requests over the steps that ended in the last 5 s (as the
        real replica reports it); None with none."""
        return self._recent_inter_token.mean_s(now)

    def complete_step(self) -> list[EngineRequest]:
        """End the running step at `step_end_s`: emit tokens, finish requests, start the next step."""
        if self.step_end_s is None:
            raise RuntimeError(f"replica {self.replica_id}: no step is running")
        end = self.step_end_s
        emitted_at = end + self._model.frontend_overhead_s
        if self._step_decoding:
            self._recent_inter_token.add_step(self._step_s * self._step_decoding, self._step_decoding, self._step_s,
                                              end)
        step = self._step
        finished: list[EngineRequest] = []
        heap = self._finish_heap
        while heap and heap[0][0] <= step:
            _, _, version, req = heapq.heappop(heap)
            if version != req.version or req.request_id not in self._decoding:
                continue
            self._step = step + 1  # its blocks as of the end of this step
            self._remove_decoding(req)
            req.generated = req.output_len
            req.finish_s = emitted_at
            finished.append(req)
        self._step = step + 1
        still_prefilling = []
        for req in self._prefilling:
            req.computed += req.chunk
            req.chunk = 0
            if req.computed < req.prompt_len + req.generated:
                still_prefilling.append(req)
                continue
            req.generated += 1
            if req.first_token_s is None:
                req.first_token_s = emitted_at
            if req.generated >= req.output_len:
                self._used_blocks -= req.blocks
                req.finish_s = emitted_at
                finished.append(req)
                continue
            self._start_decoding(req)
        self._prefilling = still_prefilling
        self.steps_run += 1
        self._start_step(end)
        return finished

    def _start_decoding(self, req: EngineRequest) -> None:
        """Hand a request's blocks to the aggregate decode bookkeeping from the next step on."""
        req.start_step, req.start_computed, req.start_generated = self._step, req.computed, req.generated
        self._decoding[req.request_id] = req
        # Its blocks are counted by formula from now on (same count: ceil(computed / block_size)).
        self._used_blocks -= req.blocks
        self._used_blocks += self._decoding_blocks(req)
        req.blocks = 0
        self._block_demand[(req.start_step - req.start_computed) % self._bs] += 1
        self._context_base += req.start_computed - req.start_step
        finish_step = req.start_step + req.output_len - req.generated - 1
        heapq.heappush(self._finish_heap, (finish_step, req.seq, req.version, req))

    def abort(self, request: EngineRequest) -> None:
        """Drop a request wherever it is (drain timeout); frees its blocks."""
        if request.request_id in self._decoding:
            self._remove_decoding(request)
        elif request in self._prefilling:
            self._prefilling.remove(request)
            self._used_blocks -= request.blocks
        else:
            self._waiting = [entry for entry in self._waiting if entry[2] is not request]
            heapq.heapify(self._waiting)
        request.version += 1
