"""The LLM replica: one vLLM `AsyncLLM` engine (one GPU, or the CPU build) behind a Ray Serve replica.

Requests are served by vLLM's own OpenAI app on that engine (`serve_app.vllm_frontend`), called
in-process; the response goes back to the ingress replica that holds the HTTP connection in batches
across requests (`serve_app.delivery`), not as one Ray Serve stream item per event.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from typing import Any

from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.usage.usage_lib import UsageContext
from vllm.v1.engine.async_llm import AsyncLLM

from autoscaling.signals import SloWindow, meets_slo, replica_stats
from serve_app.asgi_call import HttpCall, call_app
from serve_app.config import AppConfig, parse_config
from serve_app.engine_stats import EngineSnapshot, snapshot_logger_factory
from serve_app.delivery import Outbox
from serve_app.deployments.controller import LOAD_REPORT_PERIOD_S
from serve_app.generation import GenerationRequest, Headers, ResponsePart, RunSummary
from serve_app.shared_memory import remove_orphaned_segments, vllm_segments
from serve_app.telemetry import tracing
from serve_app.telemetry.gc_pauses import prepare_process_for_serving
from serve_app.telemetry.log_filters import quiet_routine_calls
from serve_app.telemetry.tracing import RequestSpan
from serve_app.vllm_frontend import CURRENT_TALLY, RequestTally, build_server_app, server_namespace, tap_engine

logger = logging.getLogger("serve_app.replica")


def engine_args_from_config(config: AppConfig, overrides: dict[str, Any] | None = None) -> AsyncEngineArgs:
    engine = config.engine
    args: dict[str, Any] = {
        "model": str(config.model.resolved_path()),
        "served_model_name": config.model.served_name,
        "quantization": None if config.model.quantization in ("auto", "none") else config.model.quantization,
        "dtype": engine.dtype,
        "max_model_len": engine.max_model_len,
        "gpu_memory_utilization": engine.gpu_memory_utilization,
        "kv_cache_dtype": engine.kv_cache_dtype,
        "enforce_eager": engine.enforce_eager,
        "enable_prefix_caching": engine.enable_prefix_caching,
        # Priority classes map onto vLLM's own priority scheduling inside each engine.
        "scheduling_policy": "priority",
        "disable_log_stats": False,
        # No prompt or request parameters (stop strings are user text) in the engine's log;
        # `engine.extra` may turn it on deliberately for debugging.
        "enable_log_requests": False,
    }
    if engine.max_num_seqs is not None:
        args["max_num_seqs"] = engine.max_num_seqs
    if engine.max_num_batched_tokens is not None:
        args["max_num_batched_tokens"] = engine.max_num_batched_tokens
    args.update(engine.extra)
    args.update(overrides or {})
    return AsyncEngineArgs(**args)


def detect_device():
    """This replica's own device: its GPU's memory (replicas may sit on different GPU types) or the CPU."""
    import torch

    from serve_app.policy.batch_controller import DeviceInfo

    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return DeviceInfo("cuda", torch.cuda.get_device_name(), total, free)
    kv_gib = float(os.environ.get("VLLM_CPU_KVCACHE_SPACE", "4") or 4)  # vLLM's CPU default is 4 GiB
    return DeviceInfo("cpu", "cpu", 0, 0, int(kv_gib * 1024**3))


class LLMReplica:
    """Streams tokens for `GenerationRequest`s; reports engine stats to routers and health to Serve."""

    async def __init__(self, config: dict, engine_overrides: dict[str, Any] | None = None,
                       ingress_name: str = "Ingress", controller: Any = None):
        quiet_routine_calls()  # no access-log line per internal call (ping, run, deliver)
        self._config = parse_config(config)
        self._replica_id = self._own_replica_id()
        self._snapshot = EngineSnapshot()
        self._controller = controller
        self._window_cap: int | None = None
        self._plan = self._device = None
        self._finished_lengths: list[tuple[int, int]] = []
        self._slo_window = SloWindow(self._config.autoscaling.llm.slo_window_s)  # autoscaling signal
        tracing.configure_from_settings(self._config.telemetry)
        self._metrics = None
        if self._config.telemetry.metrics:
            from serve_app.telemetry.metrics import ReplicaMetrics
            self._metrics = ReplicaMetrics(self._replica_id)
        started = time.monotonic()
        self._shm_before = vllm_segments()  # the engine's own, removed at stop (`__del__`) once unused
        overrides = {**await self._planned_engine_args(), **(engine_overrides or {})}
        engine_args = engine_args_from_config(self._config, overrides)
        self._engine = AsyncLLM.from_engine_args(
            engine_args,
            # The API server's usage context gives the same batch defaults as `vllm serve`.
            usage_context=UsageContext.OPENAI_API_SERVER,
            stat_loggers=[snapshot_logger_factory(self._snapshot)],
        )
        tap_engine(self._engine)
        self._app = await build_server_app(self._engine, server_namespace(engine_args, self._config.engine.frontend))
        self._startup_s = time.monotonic() - started
        # request id -> tokens still to be held in KV cache (estimated prompt + max tokens); the router's load signal.
        self._outstanding_tokens: dict[str, int] = {}
        # request id -> set when nobody reads the response any more (see `_abandon`)
        self._client_gone: dict[str, asyncio.Event] = {}
        self.aborted_abandoned = 0
        self._completed = 0
        self._ingress_name = ingress_name
        self._ingress = None
        self._outbox = Outbox(self._send_to_ingress, on_abandoned=self._abandon)
        self._stats_task: asyncio.Task | None = None
        cache = self._engine.vllm_config.cache_config
        logger.info("replica %s: engine ready in %.1fs, %s KV blocks of %s", self._replica_id, self._startup_s,
                    cache.num_gpu_blocks, cache.block_size)
        if self._controller is not None:
            await self._register()
            self._report_task = asyncio.create_task(self._report_load_forever())
        # Last: the engine client's start-up objects are frozen with the rest.
        self._gc_pauses = prepare_process_for_serving(self._config.process, lambda: len(self._outstanding_tokens))

    async def _planned_engine_args(self) -> dict[str, Any]:
        """The controller's batch size for this device, except where the config pins a value."""
        engine = self._config.engine
        if self._controller is None or engine.batch_size_policy != "memory_budget":
            return {}
        hf_config = json.loads((self._config.model.resolved_path() / "config.json").read_text())
        self._device = detect_device()
        plan = self._plan = await self._controller.plan.remote(self._replica_id, self._device, hf_config)
        pinned = {"max_num_seqs": engine.max_num_seqs, "max_num_batched_tokens": engine.max_num_batched_tokens}
        return {key: value for key, value in plan.engine_args.items() if pinned.get(key) is None}

    async def _register(self) -> None:
        """Tell the controller this replica's KV allocation (and the plan it was given, so that a
        restarted controller learns it back)."""
        cache = self._engine.vllm_config.cache_config
        self._reconciliation = await self._controller.report_allocation.remote(
            self._replica_id, cache.num_gpu_blocks, cache.block_size,
            self._engine.vllm_config.scheduler_config.max_num_seqs, self._plan, self._device)

    async def _report_load_forever(self, period_s: float = LOAD_REPORT_PERIOD_S) -> None:
        while True:
            await asyncio.sleep(period_s)
            if self._metrics is not None:
                snap = self._snapshot
                self._metrics.observe(snap.kv_cache_usage, snap.num_running, snap.num_waiting, snap.num_preemptions_total)
            lengths, self._finished_lengths = self._finished_lengths, []
            try:
                cap = await self._controller.report_load.remote(
                    self._replica_id, lengths, self._snapshot.num_preemptions_total)
                if cap is None:
                    logger.info("replica %s: the controller does not know this replica; registering again",
                                self._replica_id)
                    await self._register()
                    continue
                self._window_cap = cap
            except Exception as error:  # a controller restart must not take the replica down
                logger.warning("load report failed: %s", type(error).__name__)

    @staticmethod
    def _own_replica_id() -> str:
        try:
            from ray import serve
            return serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside Ray Serve, e.g. in a unit test
            return f"local-{uuid.uuid4().hex[:8]}"

    def _tally_for(self, request: GenerationRequest) -> RequestTally:
        http = self._config.http
        prompt_param = ("messages" if request.path.endswith("chat/completions")
                        else "input" if request.path.endswith("responses") else "prompt")
        return RequestTally(priority=request.priority_rank, prompt_param=prompt_param,
                            max_prompt_tokens=http.max_prompt_tokens, max_output_tokens=http.max_output_tokens)

    async def run(self, request: GenerationRequest, reply_to: str, target_replica: str | None = None) -> RunSummary:
        """Serve `request` through vLLM's app, sending the response's parts to ingress replica `reply_to`;
        returns once all are sent.

        `target_replica` is the router's choice, read by the request router that sent the call here.
        """
        tally = self._tally_for(request)
        CURRENT_TALLY.set(tally)  # this call's task only; vLLM's handler tasks inherit it
        client_gone = self._client_gone[request.request_id] = asyncio.Event()
        self._outstanding_tokens[request.request_id] = request.cost_tokens
        summary = RunSummary(replica_id=self._replica_id)
        span = RequestSpan("engine.generate", parent=request.trace_context,
                           attributes={"llm.replica": self._replica_id, "llm.request_id": request.request_id,
                                       "llm.priority_class": request.priority_class})
        start: dict[str, Any] = {}
        last_seq = 0

        def on_start(status: int, headers: Headers) -> None:
            summary.status = status
            start.update(status=status, headers=headers)

        def send(part: ResponsePart) -> None:
            nonlocal last_seq
            if "sent" not in start:  # the status goes with the first bytes: a stream's begin with its first token
                part.status, part.headers, start["sent"] = start.get("status", 500), start.get("headers", []), True
            if tally.first_token_at is not None:
                part.since_first_token_s = time.monotonic() - tally.first_token_at
                span.first_token(part.since_first_token_s)  # once; later calls do nothing
            last_seq = self._outbox.put(reply_to, request.request_id, part)

        def on_body(body: bytes, more: bool) -> None:
            if start.get("done"):
                return
            # A stream is complete at its `[DONE]` event; the empty last message that follows must not
            # be what the ingress waits for, or a client that leaves at `[DONE]` cancels a served request.
            done = not more or body.rstrip().endswith(b"data: [DONE]")
            if body or done:
                start["done"] = done
                send(ResponsePart(body, done=done, generated_tokens=tally.generated_tokens))

        started = time.monotonic()
        call = HttpCall("POST", request.path, [*request.headers, ("x-request-id", request.request_id)], request.body)
        try:
            try:
                completed = await call_app(self._app, call, on_start, on_body, client_gone)
            except Exception as error:  # after the response began: nothing left but an error part
                logger.exception("request %s failed in vLLM's app", request.request_id)
                completed, summary.status = False, 500
                send(ResponsePart(b"", done=True, error=f"the engine failed: {type(error).__name__}"))
            if not completed and not client_gone.is_set() and summary.status != 500:
                send(ResponsePart(b"", done=True, error="the response ended before it was complete"))
            await self._outbox.wait_sent(reply_to, last_seq)
        finally:
            summary.num_prompt_tokens, summary.num_generated = tally.prompt_tokens, tally.generated_tokens
            summary.finish_reason, summary.ttft_s = tally.finish_reason, tally.first_token_s
            span.set(llm__prompt_tokens=tally.prompt_tokens, llm__completion_tokens=tally.generated_tokens,
                     llm__finish_reason=summary.finish_reason, http__response__status_code=summary.status)
            if summary.finish_reason is None and (summary.status or 500) < 400:
                span.fail("not finished (cancelled or engine failure)")
            span.end()
            self._outstanding_tokens.pop(request.request_id, None)
            self._client_gone.pop(request.request_id, None)
            self._completed += 1
            if summary.finish_reason is not None:  # a cut-short request says nothing about lengths
                self._finished_lengths.append((tally.prompt_tokens, tally.generated_tokens))
            self._observe_slo(request.priority_class, summary, time.monotonic() - started)
        summary.duration_s = time.monotonic() - started
        return summary

    def _abandon(self, request_ids: list[str]) -> None:
        """Nobody reads these responses any more (the client, the router that dispatched them or their
        ingress replica is gone): vLLM's app sees its client disconnect, which aborts the engine
        requests and frees their KV cache."""
        gone = [self._client_gone[rid] for rid in request_ids if rid in self._client_gone]
        if gone:
            self.aborted_abandoned += len(gone)
            logger.info("replica %s: aborting %d abandoned requests", self._replica_id, len(gone))
            for event in gone:
                event.set()

    async def serve_http(self, method: str, path: str, headers: Headers, body: bytes = b"",
                         query_string: str = "") -> tuple[int, Headers, bytes]:
        """A call to vLLM's app that generates nothing (models, tokenize, version): answered whole."""
        start: dict[str, Any] = {}
        parts: list[bytes] = []
        await call_app(self._app, HttpCall(method, path, headers, body, query_string),
                       lambda status, sent: start.update(status=status, headers=sent),
                       lambda chunk, more: parts.append(chunk), asyncio.Event())
        return start.get("status", 500), start.get("headers", []), b"".join(parts)

    async def _send_to_ingress(self, ingress_replica: str, batch) -> list[str] | None:
        if self._ingress is None:
            from ray import serve

            context = serve.get_replica_context()
            self._ingress = serve.get_deployment_handle(self._ingress_name, app_name=context.app_name)
        return await self._ingress.deliver.remote(batch, target_replica=ingress_replica)

    async def _log_engine_stats(self) -> None:
        # vLLM's own periodic throughput/KV log lines, as `vllm serve` prints them.
        while True:
            await asyncio.sleep(10)
            await self._engine.do_log_stats()

    async def collected_spans(self) -> list[dict[str, Any]]:
        """Spans this replica finished (only with `telemetry.tracing_exporter: memory`, for tests)."""
        return tracing.finished_spans()

    async def check_health(self) -> None:
        """Ray Serve calls this periodically; an engine that died makes the replica restart."""
        await self._engine.check_health()

    async def ping(self) -> dict[str, Any]:
        """The health route's probe: asks the engine itself, then reports its load."""
        await self._engine.check_health()
        if self._stats_task is None:
            self._stats_task = asyncio.create_task(self._log_engine_stats())
        return {"replica_id": self._replica_id, **self.record_routing_stats()}

    def record_routing_stats(self) -> dict[str, Any]:
        """Polled by routers (Ray Serve's request-router stats) every `router.stats_period_s`."""
        return {
            "engine_unfinished_requests": self._engine.output_processor.get_num_unfinished_requests(),
            "window_cap": self._window_cap,
            "outstanding_tokens": sum(self._outstanding_tokens.values()),
            "in_flight": len(self._outstanding_tokens),
            **self._snapshot.as_dict(),
        }

    def _observe_slo(self, class_name: str, summary: RunSummary, duration_s: float) -> None:
        """A finished request met its class's TTFT and TPOT SLO or not (cancelled ones are not judged)."""
        limits = next((c for c in self._config.priority_classes if c.name == class_name), None)
        if summary.finish_reason is None or limits is None:
            return
        tpot = ((duration_s - summary.ttft_s) / (summary.num_generated - 1)
                if summary.ttft_s is not None and summary.num_generated > 1 else None)
        self._slo_window.observe(class_name, meets_slo(summary.ttft_s, tpot, limits.ttft_slo_s, limits.tpot_slo_s),
                                 time.monotonic())

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Ray Serve's custom autoscaling metrics (read by autoscaling.ray_policy): in flight, KV usage,
        SLO attainment per class here, and the router's queue per class (via the controller)."""
        queue: dict[str, float] = {}
        rates: dict[str, tuple[float, float]] = {}
        if self._controller is not None:
            try:
                queue = await self._controller.router_queue_depths.remote()
                rates = await self._controller.router_capacity_rates.remote()
            except Exception as error:  # the other signals still count
                logger.warning("router queue depths unavailable: %s", type(error).__name__)
        return replica_stats(len(self._outstanding_tokens), self._snapshot.kv_cache_usage, queue,
                             self._slo_window.attainment(time.monotonic()), rates)

    async def engine_stats(self, target_replica: str | None = None) -> dict[str, Any]:
        """Engine and delivery counters (`target_replica` picks the replica, as in `run`)."""
        cache = self._engine.vllm_config.cache_config
        return {
            "replica_id": self._replica_id,
            "startup_s": self._startup_s,
            "num_gpu_blocks": cache.num_gpu_blocks,
            "block_size": cache.block_size,
            "max_num_seqs": self._engine.vllm_config.scheduler_config.max_num_seqs,
            "max_num_batched_tokens": self._engine.vllm_config.scheduler_config.max_num_batched_tokens,
            "reconciliation": getattr(self, "_reconciliation", None),
            "completed": self._completed,
            "delivery_batches": self._outbox.batches_sent,
            "delivery_chunks": self._outbox.chunks_sent,
            "aborted_abandoned": self.aborted_abandoned,
            "gc_pauses": self._gc_pauses.summary(),
            **self.record_routing_stats(),
        }

    def __del__(self):
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.shutdown()
            # vLLM kills an engine process that does not exit in time; its /dev/shm segments stay.
            remove_orphaned_segments(self._shm_before)
