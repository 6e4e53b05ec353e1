"""The router's decisions in one place: rate limit, admission, global priority queue, per-replica
windows (adaptive batching) and replica choice.

Pure and single-threaded: the router deployment calls it with `now` and acts on what it returns
(`Refusal`s to answer, `Dispatch`es to send). Every request that `admit` accepts ends in exactly
one of `take_dispatches` + `finish`/`cancel`, `expire`, or `cancel` while queued. Callers hold it as
a `serve_app.policy.router_contract.RouterContract`: its public methods are all they use.
"""
from __future__ import annotations

import bisect
import dataclasses
import math
import random
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from serve_app.policy.admission import AdmissionController, AdmissionPreview
from serve_app.policy.api_keys import Caller
from serve_app.policy.prefix_cache_index import CacheEvent
from serve_app.policy.prefix_routing import HitBook, PrefixRouting
from serve_app.policy.priority_classes import PriorityClasses
from serve_app.policy.priority_queue import PriorityRequestQueue, QueuedRequest, QueueFull
from serve_app.policy.recent_latency import RecentLatencies
from serve_app.policy.rate_limit import RateLimiter
from serve_app.policy.replica_choice import ReplicaLoad, choose_replica
from serve_app.policy.router_settings import CACHE_INDEX_ROUTINGS, RouterSettings
from serve_app.policy.tenant_ledger import TenantLedger
# Refusal and Dispatch are the contract's; imported here too for callers that import them from this module.
from serve_app.policy.router_contract import Dispatch, Refusal, RouterContract
from serve_app.policy.window_controller import WindowController, create_window_controller, reserved_headroom
from serve_app.statistics import percentile


# The router's tuning is the config's validated `router:` section itself (no copy of its fields, each
# default stated once there); the name stays for the router shell, the simulator and tests.
RouterPolicy = RouterSettings

# `lower_class_prefill_tokens` applies while the top class has requests in the router, or admitted one
# this recently (top-class requests come and go between a flood's lower-class ones).
TOP_CLASS_ACTIVE_S = 5.0


@dataclass
class _Replica:
    window: WindowController
    controller_cap: int = 0
    in_flight: int = 0
    top_class_in_flight: int = 0
    outstanding_tokens: int = 0
    dispatched_total: int = 0
    # Prompt tokens of requests sent here that have not produced a first token yet (`first_token`).
    prefilling_tokens: int = 0
    # Starts owed while in flight is over the window (`drain_dispatch_share` per completion), at most one.
    drain_credit: float = 0.0


@dataclass(frozen=True)
class _Queued:
    class_name: str
    cost_tokens: int
    prefix_key: int | None
    prefix_blocks: tuple[int, ...] = ()
    prompt_tokens: int | None = None
    first_token_seen: bool = True
    # The one replica that can serve it (None: any), e.g. the holder of the stored response it continues.
    replica_id: str | None = None


@dataclass(frozen=True)
class _Running:
    replica_id: str
    class_name: str
    cost_tokens: int
    started_s: float
    prefill_tokens: int = 0  # its prompt tokens until its first token comes


@dataclass
class ClassCounters:
    admitted: int = 0
    refused_overload: int = 0
    refused_rate_limit: int = 0
    refused_queue_full: int = 0
    expired: int = 0
    shed: int = 0
    cancelled: int = 0
    dispatched: int = 0
    served: int = 0
    failed: int = 0
    refused_wait_max_s: float = 0.0
    queue_waits_s: deque = field(default_factory=lambda: deque(maxlen=1024))


class RouterCore(RouterContract):
    """The router's decisions; also what the autoscaling simulator runs at hundreds of replicas and
    thousands of requests per second, so per-event work must not grow with the requests held."""

    def __init__(self, classes: PriorityClasses, policy: RouterPolicy, rng: random.Random) -> None:
        self._classes = classes
        self._levels = {name: classes.level_of(name) for name in classes.names}
        self._policy = policy
        self._rng = rng
        self._queue = PriorityRequestQueue(classes, policy.max_queue_size, policy.aging_interval_s,
                                            policy.newest_first_after)
        self._admission = AdmissionController(classes, policy.initial_service_rate_rps,
                                              warmup_completions=policy.admission_warmup_completions)
        self._limiters: dict[str, RateLimiter] = {}
        self._replicas: dict[str, _Replica] = {}
        # Replicas seen dead: the controller may list one for a while after (its reports go stale
        # only later), and routing to it again would fail the re-routed requests too.
        self._dead: set[str] = set()
        self._queued: dict[str, _Queued] = {}
        # Requests for one replica (`admit`'s `replica_id`) that reached the queue's head while it had no room:
        # set aside per replica, in class then arrival order, so that they hold back no one bound elsewhere.
        self._waiting_for_replica: dict[str, list[QueuedRequest]] = {}
        self._shed: list[tuple[str, Refusal]] = []
        self._running: dict[str, _Running] = {}
        # Kept as requests start and end, so the window targets need no scan of every running request.
        self._running_by_class = dict.fromkeys(classes.names, 0)
        self._counters = {c.name: ClassCounters(queue_waits_s=deque(maxlen=policy.latency_samples))
                          for c in classes.by_rank()}
        # TTFT as the replicas measured it (engine queue + prefill), booked when the request ends; a
        # benchmark polling stats compares it with the ingress's to see where first tokens waited.
        self._recent_replica_ttft = RecentLatencies()
        self._tenants = TenantLedger()
        self._heaviest_weight = 1.0  # a new caller's share is previewed at the largest weight seen
        self._first_block_affinity = policy.routing == "first_block_affinity"
        # vLLM's own count of prompt tokens served from its prefix cache, whatever the routing.
        self._measured_hits = HitBook(classes.names)
        self._prefix = PrefixRouting(policy, classes.names) if policy.routing in CACHE_INDEX_ROUTINGS else None
        self._top_admitted_at = -math.inf
        self._prefill_holds = 0  # dispatch attempts that found window room only where prompts still prefill

    # ---- replicas --------------------------------------------------------------------------
    def set_replicas(self, caps: Mapping[str, int]) -> None:
        """The routable replicas and each one's memory-derived window cap (from the controller)."""
        for replica_id in list(self._replicas):
            if replica_id not in caps:
                del self._replicas[replica_id]
                self._forget_cache(replica_id)
        self._dead &= set(caps)  # once the controller has dropped it too, nothing to remember
        for replica_id, cap in caps.items():
            if replica_id in self._dead:
                continue
            # The top class's headroom must fit under the engine's own limit too, or its requests
            # would wait inside vLLM, which never preempts a running request to start another.
            window_cap = max(1, math.floor(max(1, int(cap)) / (1 + self._policy.headroom_fraction)))
            replica = self._replicas.get(replica_id)
            if replica is None:
                ttft, tpot = self._targets()
                initial = min(self._policy.initial_window or window_cap, window_cap)
                window = create_window_controller(self._policy.window_tuning, initial, window_cap, ttft, tpot)
                replica = self._replicas[replica_id] = _Replica(window)
            else:
                replica.window.set_cap(window_cap)
            replica.controller_cap = int(cap)

    def replica_failed(self, replica_id: str) -> None:
        """Stop sending to a replica at once and for good (Serve gives a replacement a new id); its
        running requests still end through `finish`."""
        self._replicas.pop(replica_id, None)
        self._dead.add(replica_id)
        self._forget_cache(replica_id)

    def apply_cache_events(self, replica_id: str, events: Iterable[CacheEvent]) -> None:
        """A replica's KV cache events, in the order it emitted them (kept by `routing: precise_prefix`)."""
        if self._prefix is not None and replica_id not in self._dead:
            self._prefix.apply_events(replica_id, events)

    def set_cache_capacity(self, replica_id: str, blocks: int, block_size: int) -> None:
        """A replica's KV cache size (vLLM's num_gpu_blocks and block_size): bounds its part of the index."""
        if self._prefix is not None:
            self._prefix.set_capacity(replica_id, blocks, block_size)

    def _forget_cache(self, replica_id: str) -> None:
        self._measured_hits.forget(replica_id)
        if self._prefix is not None:
            self._prefix.remove_replica(replica_id)

    # ---- admission ---------------------------------------------------------------------------
    def admit(self, request_id: str, class_name: str, caller: Caller, cost_tokens: int, now: float,
              prefix_key: int | None = None, prefix_blocks: tuple[int, ...] = (),
              prompt_tokens: int | None = None, first_token_seen: bool = True,
              replica_id: str | None = None) -> Refusal | None:
        """Queue the request, or say why not (rate limit, predicted wait past the deadline, full queue).
        `prefix_blocks`: the prompt's block keys (`prefix_blocks.block_keys`) for cache-aware routing.
        `first_token_seen`: False when the caller learns of no first token before the end (a whole answer):
        its prompt then never counts as prefilling (`lower_class_prefill_tokens`), or it would hold the room
        for its whole generation. `replica_id`: the only replica that can serve it (within that replica's
        window); one that is not routable (gone) binds nothing, and the request goes wherever there is room."""
        counters = self._counters[self._classes.get(class_name).name]
        self._heaviest_weight = max(self._heaviest_weight, caller.weight)
        refusal = self._rate_limited(caller, now)
        if refusal is None:
            # What fair shares serve before this caller's request, so the caller over its share is refused first.
            decision = self._admission.decide(class_name, self._queue.ahead_of(class_name, caller.name, caller.weight),
                                              self._free_slots(class_name), now)
            if not decision.admitted:
                counters.refused_overload += 1
                self._tenants.refused_overload(caller.name, class_name)
                refusal = Refusal(429, "overloaded", f"the service is at capacity for priority class "
                                  f"{class_name!r}: {decision.reason}", decision.retry_after_s)
        else:
            counters.refused_rate_limit += 1
        if refusal is not None:
            return refusal
        try:
            self._queue.push(request_id, class_name, now, cost_tokens, caller.name, caller.weight)
        except QueueFull as full:
            # A full queue of lower classes must not turn higher classes away: shed what the lowest class
            # would serve last, of its caller most over its fair share (answered 503 at the next `expire`).
            victim = self._queue.last_below(class_name, now)
            if victim is None:
                counters.refused_queue_full += 1
                return Refusal(429, "queue_full", str(full), self._retry_after(len(self._queue)))
            self._shed_for(victim, class_name, now)
            self._queue.push(request_id, class_name, now, cost_tokens, caller.name, caller.weight)
        self._queued[request_id] = _Queued(class_name, cost_tokens, prefix_key, prefix_blocks, prompt_tokens,
                                           first_token_seen, replica_id if replica_id in self._replicas else None)
        counters.admitted += 1
        if self._is_top(self._classes.get(class_name).name):
            self._top_admitted_at = now
        self._tenants.admitted(request_id, caller.name, class_name)
        return None

    def admission_preview(self, now: float) -> dict[str, AdmissionPreview | None]:
        """Per class, how many more requests `admit` would take now before refusing for overload (None:
        no limit yet); for the ingress's door (`serve_app.policy.admission_door`), counting nothing.
        Answered for a caller with nothing queued: the door, which does not know callers, must not refuse
        a light caller because a heavy one is over its fair share."""
        preview: dict[str, AdmissionPreview | None] = {}
        for class_name in self._classes.names:
            queued_ahead = self._queue.ahead_of(class_name, None, self._heaviest_weight)
            free_slots = self._free_slots(class_name)
            room = self._admission.room(class_name, queued_ahead, free_slots)
            if room is None:
                preview[class_name] = None
                continue
            first_refused = self._admission.decide(class_name, queued_ahead + room, free_slots, now)
            preview[class_name] = AdmissionPreview(
                room, f"the service is at capacity for priority class {class_name!r}: {first_refused.reason}",
                first_refused.retry_after_s)
        return preview

    def record_door_refusals(self, counts: Mapping[str, int]) -> None:
        """Overload refusals the ingress answered at its door while this core was refusing the class."""
        for class_name, count in counts.items():
            self._counters[self._classes.get(class_name).name].refused_overload += count

    def _rate_limited(self, caller: Caller, now: float) -> Refusal | None:
        if caller.rate_limit_rps is None:
            return None
        limiter = self._limiters.get(caller.name)
        if limiter is None:
            limiter = self._limiters[caller.name] = RateLimiter(caller.rate_limit_rps, caller.burst)
        wait_s = limiter.try_acquire(caller.name, now)
        if wait_s <= 0:
            return None
        return Refusal(429, "rate_limit_exceeded", f"caller {caller.name!r} is limited to "
                       f"{caller.rate_limit_rps:g} requests/s", max(1, math.ceil(wait_s)))

    def _retry_after(self, completions_needed: int) -> int:
        return max(1, math.ceil(completions_needed / self._admission.service_rate_rps))

    def _limit(self, class_name: str, replica: _Replica) -> int:
        """In-flight requests on `replica` below which a request of `class_name` may start there."""
        level = self._levels[class_name]
        window = replica.window.window
        if level:
            # No reserved headroom below the top class (`reserved_headroom`); returning early matters
            # because this runs for every replica on each admission and dispatch.
            return window
        headroom = reserved_headroom(level, window, self._policy.headroom_fraction)
        limit = window + headroom
        if headroom:
            # The top class's headroom is its own budget: right after a window cut, in_flight is
            # above the new window, and the top class must still start at once (within the engine's cap).
            own_budget = replica.in_flight + max(0, headroom - replica.top_class_in_flight)
            limit = max(limit, min(replica.controller_cap, own_budget))
        return limit

    def _dispatch_limit(self, class_name: str, replica: _Replica) -> int:
        """`_limit`, or one over what is in flight while the replica drains a cut and has a start owed."""
        limit = self._limit(class_name, replica)
        if replica.in_flight >= limit and replica.drain_credit >= 1.0:
            return replica.in_flight + 1
        return limit

    def _free_slots(self, class_name: str) -> int:
        return sum(max(0, self._limit(class_name, r) - r.in_flight) for r in self._replicas.values())

    # ---- dispatch ------------------------------------------------------------------------------
    def take_dispatches(self, now: float) -> list[Dispatch]:
        """Pop queued requests in priority order while some replica has window room for them."""
        dispatches = self._dispatch_set_aside(now)
        while len(self._queue):
            entry = self._queue.peek_next(now)
            replica_id = self._choose(entry.request_id, now)
            if replica_id is None and self._set_aside_if_bound(entry):
                continue
            if replica_id is None:
                # The head does not fit; the top class may still start within its reserved headroom.
                entry = self._queue.peek_class(self._classes.names[0], now)
                replica_id = self._choose(entry.request_id, now) if entry is not None else None
                if replica_id is None:
                    if entry is not None and self._set_aside_if_bound(entry):
                        continue
                    break
            self._queue.take(entry.request_id)
            dispatches.append(self._start(entry.request_id, replica_id, now - entry.arrival_s, now))
        if dispatches:
            self._admission.set_busy(now, True)
        return dispatches

    def _set_aside_if_bound(self, entry: QueuedRequest) -> bool:
        """Take a head that only its own replica can serve, and that replica has no room, out of the queue."""
        bound_to = self._queued[entry.request_id].replica_id
        if bound_to is None or bound_to not in self._replicas:
            return False
        self._queue.take(entry.request_id)
        bisect.insort(self._waiting_for_replica.setdefault(bound_to, []), entry, key=lambda e: (e.level, e.seq))
        return True

    def _dispatch_set_aside(self, now: float) -> list[Dispatch]:
        """Start set-aside requests where their replica has room now (or, where it is gone, anywhere)."""
        dispatches: list[Dispatch] = []
        for replica_id in list(self._waiting_for_replica):
            waiting = self._waiting_for_replica[replica_id]
            while waiting and (chosen := self._choose(waiting[0].request_id, now)) is not None:
                entry = waiting.pop(0)
                dispatches.append(self._start(entry.request_id, chosen, now - entry.arrival_s, now))
            if not waiting:
                del self._waiting_for_replica[replica_id]
        return dispatches

    def _choose(self, request_id: str, now: float) -> str | None:
        queued = self._queued[request_id]
        name = queued.class_name
        prefill_budget = self._prefill_budget(name, now)
        bound = self._replicas.get(queued.replica_id) if queued.replica_id is not None else None
        if bound is not None:
            room = bound.in_flight < self._dispatch_limit(name, bound) and self._prefill_room(bound, queued,
                                                                                              prefill_budget)
            return queued.replica_id if room else None
        if self._first_block_affinity:
            # Affinity hashes over every replica, full ones included, so it needs them all.
            loads = [ReplicaLoad(rid, r.outstanding_tokens, r.in_flight,
                                 self._dispatch_limit(name, r) if self._prefill_room(r, queued, prefill_budget)
                                 else r.in_flight, dispatched_total=r.dispatched_total)
                     for rid, r in self._replicas.items()]
            return choose_replica(loads, self._rng, prefix_key=queued.prefix_key,
                                  affinity_load_bound=self._policy.affinity_load_bound)
        # Only replicas with room: the list `choose_replica` would filter to, in the same order, so
        # the seeded draw is the same, without a load object per full replica (most, under load).
        loads = []
        held = False
        for rid, r in self._replicas.items():
            limit = self._dispatch_limit(name, r)
            if r.in_flight < limit:
                if not self._prefill_room(r, queued, prefill_budget):
                    held = True
                    continue
                loads.append(ReplicaLoad(rid, r.outstanding_tokens, r.in_flight, limit,
                                         dispatched_total=r.dispatched_total))
        if held and not loads:
            self._prefill_holds += 1
        if self._prefix is not None and queued.prefix_blocks:
            return self._prefix.choose(loads, queued.prefix_blocks, queued.prompt_tokens, self._rng, now)
        return choose_replica(loads, self._rng)

    def _prefill_budget(self, class_name: str, now: float) -> int | None:
        """`lower_class_prefill_tokens` where it applies to a request of `class_name` now, else None."""
        budget = self._policy.lower_class_prefill_tokens
        if budget is None or self._is_top(class_name):
            return None
        top = self._classes.names[0]
        if (self._running_by_class[top] or self._queue.depth_by_class()[top]
                or now - self._top_admitted_at <= TOP_CLASS_ACTIVE_S):
            return budget
        return None

    def _prefill_room(self, replica: _Replica, queued: _Queued, budget: int | None) -> bool:
        if budget is None or not replica.prefilling_tokens:
            return True  # one request may always start, however long its prompt
        return replica.prefilling_tokens + (queued.prompt_tokens or 0) <= budget

    def _start(self, request_id: str, replica_id: str, waited_s: float, now: float) -> Dispatch:
        queued = self._queued.pop(request_id)
        replica = self._replicas[replica_id]
        if replica.drain_credit >= 1.0 and replica.in_flight >= self._limit(queued.class_name, replica):
            replica.drain_credit -= 1.0  # started on a completion's share while the replica drains a cut
        replica.in_flight += 1
        replica.dispatched_total += 1
        replica.top_class_in_flight += self._is_top(queued.class_name)
        replica.outstanding_tokens += queued.cost_tokens
        prefill_tokens = (queued.prompt_tokens or 0) if queued.first_token_seen else 0
        replica.prefilling_tokens += prefill_tokens
        self._running[request_id] = _Running(replica_id, queued.class_name, queued.cost_tokens, now, prefill_tokens)
        self._running_by_class[queued.class_name] += 1
        counters = self._counters[queued.class_name]
        counters.dispatched += 1
        counters.queue_waits_s.append(waited_s)
        if self._prefix is not None:
            self._prefix.record_dispatch(replica_id, queued.class_name, queued.prefix_blocks, queued.prompt_tokens,
                                         now)
        return Dispatch(request_id, replica_id)

    def _shed_for(self, victim, class_name: str, now: float) -> None:
        self._queue.remove(victim.request_id)
        queued = self._queued.pop(victim.request_id)
        self._tenants.dropped(victim.request_id)
        self._counters[queued.class_name].shed += 1
        self._shed.append((victim.request_id, Refusal(
            503, "shed_for_higher_priority", f"the router's queue is full and a priority class {class_name!r} "
            f"request took this {queued.class_name!r} request's place after {victim.waited_s(now):.1f}s",
            self._retry_after(len(self._queue)))))

    def expire(self, now: float, ahead_s: float = 0.0) -> list[tuple[str, Refusal]]:
        """Queued requests past their class's queue deadline (or past it within `ahead_s`, the caller's
        check period) or shed from a full queue, each with its 503."""
        expired, self._shed = self._shed, []
        for entry in [*self._queue.expired(now, ahead_s), *self._set_aside_expired(now, ahead_s)]:
            queued = self._queued.pop(entry.request_id)
            self._tenants.dropped(entry.request_id)
            counters = self._counters[queued.class_name]
            counters.expired += 1
            counters.refused_wait_max_s = max(counters.refused_wait_max_s, entry.waited_s(now))
            deadline_s = self._classes.get(queued.class_name).queue_deadline_s
            expired.append((entry.request_id, Refusal(
                503, "queue_deadline_exceeded", f"waited {entry.waited_s(now):.1f}s for a replica; the "
                f"{deadline_s:g}s queue deadline of priority class {queued.class_name!r} ran out",
                self._retry_after(len(self._queue) + 1))))
        return expired

    def _set_aside_expired(self, now: float, ahead_s: float) -> list[QueuedRequest]:
        """Set-aside requests past their class's queue deadline (within `ahead_s`), taken out."""
        expired: list[QueuedRequest] = []
        for replica_id in list(self._waiting_for_replica):
            waiting = self._waiting_for_replica[replica_id]
            late = [e for e in waiting if e.waited_s(now) + ahead_s > self._classes.get(e.class_name).queue_deadline_s]
            if late:
                waiting[:] = [e for e in waiting if e not in late]
                expired.extend(late)
            if not waiting:
                del self._waiting_for_replica[replica_id]
        return expired

    # ---- completion ----------------------------------------------------------------------------
    def first_token(self, request_id: str, now: float) -> None:
        """A dispatched request's first token (or the start of its answer) reached the caller: its prompt
        no longer waits for the engine's prefill (`lower_class_prefill_tokens`)."""
        running = self._running.get(request_id)
        if running is None or not running.prefill_tokens:
            return
        replica = self._replicas.get(running.replica_id)
        if replica is not None:
            replica.prefilling_tokens = max(0, replica.prefilling_tokens - running.prefill_tokens)
        self._running[request_id] = dataclasses.replace(running, prefill_tokens=0)

    def finish(self, request_id: str, now: float, *, ok: bool, ttft_s: float | None = None,
               tpot_s: float | None = None, prompt_tokens: int = 0, cached_prompt_tokens: int = 0,
               engine_tpot_s: float | None = None) -> None:
        """A dispatched request ended: free its slot and feed its latencies to the replica's window;
        `cached_prompt_tokens` of its `prompt_tokens` were found in the engine's prefix cache."""
        running = self._running.pop(request_id, None)
        if running is None:
            return
        if prompt_tokens:
            self._measured_hits.book(running.replica_id, running.class_name, cached_prompt_tokens, prompt_tokens)
        counters = self._counters[running.class_name]
        self._tenants.ended(request_id, running.class_name, served=ok)
        if ok:
            counters.served += 1
        else:
            counters.failed += 1
        self._admission.record_completion(now)
        self._admission.set_busy(now, bool(self._running))
        if ok and ttft_s is not None:
            self._recent_replica_ttft.add(running.class_name, now, ttft_s)
        replica = self._release(running)
        if replica is not None and ok:
            replica.window.set_targets(*self._targets())
            replica.window.observe(ttft_s, tpot_s, now, started_s=running.started_s,
                                   demand_waiting=len(self._queue) > 0, engine_tpot_s=engine_tpot_s)

    def cancel(self, request_id: str, now: float | None = None) -> None:
        """The client left: drop the request from the queue, or free its slot if it was dispatched
        (`now`, when known, ends the admission's busy time once nothing runs)."""
        self._tenants.dropped(request_id)
        if self._queue.remove(request_id) or self._remove_set_aside(request_id):
            self._counters[self._queued.pop(request_id).class_name].cancelled += 1
            return
        running = self._running.pop(request_id, None)
        if running is None:
            return
        self._counters[running.class_name].cancelled += 1
        self._release(running)
        if now is not None:
            self._admission.set_busy(now, bool(self._running))

    def _remove_set_aside(self, request_id: str) -> bool:
        queued = self._queued.get(request_id)
        waiting = self._waiting_for_replica.get(queued.replica_id, []) if queued is not None else []
        index = next((i for i, entry in enumerate(waiting) if entry.request_id == request_id), None)
        if index is None:
            return False
        del waiting[index]
        if not waiting:
            del self._waiting_for_replica[queued.replica_id]
        return True

    def _release(self, running: _Running) -> _Replica | None:
        """Undo `_start` for a request just taken out of `_running`."""
        self._running_by_class[running.class_name] -= 1
        replica = self._replicas.get(running.replica_id)
        if replica is not None:
            replica.in_flight = max(0, replica.in_flight - 1)
            replica.top_class_in_flight = max(0, replica.top_class_in_flight - self._is_top(running.class_name))
            replica.outstanding_tokens = max(0, replica.outstanding_tokens - running.cost_tokens)
            replica.prefilling_tokens = max(0, replica.prefilling_tokens - running.prefill_tokens)
            if self._policy.drain_dispatch_share:  # off (the default), the credit stays 0: skip the limit
                draining = replica.in_flight >= self._limit(self._classes.names[0], replica)
                replica.drain_credit = (min(1.0, replica.drain_credit + self._policy.drain_dispatch_share)
                                        if draining else 0.0)
        return replica

    def _is_top(self, class_name: str) -> int:
        return int(self._levels[class_name] == 0)

    def _targets(self) -> tuple[float, float]:
        """The tightest TTFT and TPOT SLOs among classes with queued or running requests."""
        # From counts per class: this runs on every completion, with thousands held in a simulation.
        depth = self._queue.depth_by_class()
        active = [name for name, running in self._running_by_class.items() if running or depth[name]]
        names = active or self._classes.names
        return self._classes.tightest_ttft_slo(names), self._classes.tightest_tpot_slo(names)

    # ---- observability -------------------------------------------------------------------------
    @property
    def running_count(self) -> int:
        return len(self._running)

    @property
    def routable_count(self) -> int:
        return len(self._replicas)

    def queue_depth_by_class(self) -> dict[str, int]:
        return self._queue.depth_by_class()

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """Counters per class and replica; with `now`, also each class's replica-measured TTFT over
        the last seconds (`replica_ttft_recent`)."""
        depth = self._queue.depth_by_class()
        running_by_class = self._running_by_class
        classes = {}
        for name, c in self._counters.items():
            waits = list(c.queue_waits_s)
            classes[name] = {
                "queued": depth[name], "running": running_by_class[name], "admitted": c.admitted,
                "refused_overload": c.refused_overload, "refused_rate_limit": c.refused_rate_limit,
                "refused_queue_full": c.refused_queue_full, "expired": c.expired, "shed": c.shed,
                "cancelled": c.cancelled,
                "dispatched": c.dispatched, "served": c.served, "failed": c.failed,
                "queue_wait_p50_s": percentile(waits, 50),
                "queue_wait_p99_s": percentile(waits, 99),
                "refused_wait_max_s": c.refused_wait_max_s,
            }
        replicas = {rid: {"window": r.window.window, "window_cap": r.window.cap, "controller_cap": r.controller_cap,
                          "in_flight": r.in_flight, "outstanding_tokens": r.outstanding_tokens,
                          "prefilling_tokens": r.prefilling_tokens,
                          "window_state": r.window.state()} for rid, r in self._replicas.items()}
        stats = {"classes": classes, "replicas": replicas, "queue_depth": len(self._queue),
                 "waiting_for_their_replica": sum(len(w) for w in self._waiting_for_replica.values()),
                 "running": len(self._running), "service_rate_rps": self._admission.service_rate_rps,
                 "prefill_holds": self._prefill_holds}
        stats["tenants"] = self._tenants.stats(self._queue.depth_by_tenant())
        if now is not None:
            stats["replica_ttft_recent"] = self._recent_replica_ttft.summary(now)
        self._measured_hits.add_stats(stats, "prefix_cache_hit_rate", ("prefix_cache_hits", "prefix_cache_queries"))
        if self._prefix is not None:
            self._prefix.add_stats(stats)
        return stats
