"""Bounded global request queue: strict priority between classes, weighted fair shares between tenants
(API keys) inside one class, and within a tenant oldest first until its oldest request can no longer meet
its TTFT target, newest first from then on (adaptive LIFO).

Aging lifts a class one level per `aging_interval_s` its oldest entry has waited, so low classes cannot
starve. Inside a class, start-time fair queuing (Goyal, Vin & Cheng, SIGCOMM 1996): each entry gets a start
tag max(class virtual time, the tenant's previous finish tag) and a finish tag start + cost / weight; the
head with the smallest start tag goes first, and the class's virtual time is the start tag last served.
A tenant that was idle restarts at the class's virtual time: no credit for the idle time, so no burst.

A tenant's turns (start tags) belong to its queue positions, not to requests: whichever request it sends
on its turn spends its smallest tag, and a request removed unserved gives up its last one (no credit).

Adaptive LIFO (Facebook's RPC queues switch to LIFO once they stand: Maurer, "Fail at Scale", ACM Queue
2015): once a tenant's oldest request of a class has waited `newest_first_after` x the class's TTFT SLO, it
misses that target whatever happens next, while the tenant's newest can still meet it. Oldest first from
there hands every later request the same late start, so under a sustained overload FIFO meets the SLO for
almost nobody; newest first keeps serving requests within their target at the replicas' rate, and the old
ones are served once the overload passes or refused at their class's queue deadline, as before. On the
calibrated simulator (benchmarks/window_overload_sim.py: one replica, mixed preset, 120 s of arrivals at
14-22 req/s, over what it serves within the SLO) this alone took the share of requests within the SLO from
41-4% to 53-29% (vLLM alone: 45-2%), and with the window's TPOT set-point to 75-41%.

Cost is one request, not `cost_tokens`: the issue's goal is goodput in requests, and `cost_tokens` is an
estimate that prices a request without `max_tokens` at the whole context, which would charge the tenants
that leave it unset many times over for requests that may be short.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass

from serve_app.policy.priority_classes import PriorityClasses

DEFAULT_TENANT = ""
_REQUEST_COST = 1.0


class QueueFull(RuntimeError):
    """Raised by push when the queue already holds `max_size` entries."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        super().__init__(f"request queue is full ({max_size} entries)")


@dataclass(frozen=True)
class QueuedRequest:
    """A request waiting for a replica slot."""

    request_id: str
    class_name: str
    level: int  # position of the class in rank order, 0 = highest
    arrival_s: float
    cost_tokens: int
    seq: int  # push order; breaks ties between equal arrival times
    tenant: str = DEFAULT_TENANT

    def waited_s(self, now: float) -> float:
        return max(0.0, now - self.arrival_s)


class _Tenant:
    """One tenant's requests inside one class in arrival order, its turns, and where its fair share has got to."""

    __slots__ = ("fifo", "turns", "weight", "finish_tag")

    def __init__(self, weight: float) -> None:
        self.fifo: OrderedDict[str, QueuedRequest] = OrderedDict()
        self.turns: deque[float] = deque()  # start tags of its queued positions, ascending
        self.weight = weight
        self.finish_tag = 0.0

    def head(self) -> QueuedRequest:
        return next(iter(self.fifo.values()))

    def tail(self) -> QueuedRequest:
        return next(reversed(self.fifo.values()))

    def newest_first(self, now: float, after_s: float | None) -> bool:
        return after_s is not None and self.head().waited_s(now) > after_s

    def served_first(self, now: float, after_s: float | None) -> QueuedRequest:
        return self.tail() if self.newest_first(now, after_s) else self.head()

    def served_last(self, now: float, after_s: float | None) -> QueuedRequest:
        return self.head() if self.newest_first(now, after_s) else self.tail()


class _ClassQueue:
    """The tenants of one class; `active` holds those with queued entries, so a pop scans only them."""

    __slots__ = ("tenants", "active", "virtual_time", "depth", "newest_first_after_s")

    def __init__(self, newest_first_after_s: float | None) -> None:
        self.tenants: dict[str, _Tenant] = {}  # kept while idle: the finish tag stops a closed loop from jumping ahead
        self.active: dict[str, _Tenant] = {}
        self.virtual_time = 0.0
        self.depth = 0
        self.newest_first_after_s = newest_first_after_s

    def fair_pick(self, now: float) -> QueuedRequest | None:
        """The entry served next: of the tenant whose turn comes first by start-time fair queuing (ties: its
        oldest's push order), the request it serves first (its oldest, or its newest once the oldest is late)."""
        best: _Tenant | None = None
        for tenant in self.active.values():
            if best is None or (tenant.turns[0], tenant.head().seq) < (best.turns[0], best.head().seq):
                best = tenant
        return best.served_first(now, self.newest_first_after_s) if best is not None else None

    def last_pick(self, now: float) -> QueuedRequest | None:
        """The entry fair queuing would serve last: of the tenant with the latest last turn (ties: push
        order of what it serves last), the request it serves last."""
        candidates = [(t.turns[-1], t.served_last(now, self.newest_first_after_s)) for t in self.active.values()]
        return max(candidates, key=lambda c: (c[0], c[1].seq))[1] if candidates else None

    def oldest_head(self) -> QueuedRequest | None:
        heads = [tenant.head() for tenant in self.active.values()]
        return min(heads, key=lambda e: e.seq) if heads else None


class PriorityRequestQueue:
    """Per-class, per-tenant queues in arrival order. Pop picks the class with the best effective level
    (then the earliest oldest arrival), then inside it the tenant whose turn it is by weight, and of that
    tenant's requests its oldest, or its newest once the oldest is too late for its TTFT target.

    `now` must not go backwards between pushes: arrival order per tenant relies on it.
    """

    def __init__(
        self,
        classes: PriorityClasses,
        max_size: int,
        aging_interval_s: float | None = None,
        newest_first_after: float | None = None,
    ) -> None:
        """`newest_first_after`: once a tenant's oldest request of a class has waited this many times the
        class's TTFT SLO, the tenant's newest goes first (None: oldest first always)."""
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        if aging_interval_s is not None and not aging_interval_s > 0:
            raise ValueError(f"aging_interval_s must be > 0 or None, got {aging_interval_s}")
        if newest_first_after is not None and not newest_first_after > 0:
            raise ValueError(f"newest_first_after must be > 0 or None, got {newest_first_after}")
        self._classes = classes
        self._max_size = max_size
        self._aging_interval_s = aging_interval_s
        self._queues: dict[str, _ClassQueue] = {
            c.name: _ClassQueue(None if newest_first_after is None else newest_first_after * c.ttft_slo_s)
            for c in classes.by_rank()}
        self._where: dict[str, QueuedRequest] = {}
        self._next_seq = 0
        self._last_push_s = -math.inf

    @property
    def max_size(self) -> int:
        return self._max_size

    def push(self, request_id: str, class_name: str, now: float, cost_tokens: int,
             tenant: str = DEFAULT_TENANT, weight: float = 1.0) -> QueuedRequest:
        level = self._classes.level_of(class_name)  # raises UnknownPriorityClass
        if request_id in self._where:
            raise ValueError(f"request {request_id!r} is already queued")
        if cost_tokens < 0:
            raise ValueError(f"cost_tokens must be >= 0, got {cost_tokens}")
        if not weight > 0:
            raise ValueError(f"weight must be > 0, got {weight}")
        if now < self._last_push_s:
            raise ValueError(f"clock went backwards: push at {now} after {self._last_push_s}")
        if len(self._where) >= self._max_size:
            raise QueueFull(self._max_size)
        queue = self._queues[class_name]
        state = queue.tenants.get(tenant)
        if state is None:
            state = queue.tenants[tenant] = _Tenant(weight)
        state.weight = weight
        start_tag = max(queue.virtual_time, state.finish_tag)
        state.finish_tag = start_tag + _REQUEST_COST / weight
        entry = QueuedRequest(request_id, class_name, level, now, cost_tokens, self._next_seq, tenant)
        self._next_seq += 1
        self._last_push_s = now
        state.fifo[request_id] = entry
        state.turns.append(start_tag)
        queue.active[tenant] = state
        queue.depth += 1
        self._where[request_id] = entry
        return entry

    def effective_level(self, entry: QueuedRequest, now: float) -> int:
        """Class level after aging; never better than level 0."""
        if self._aging_interval_s is None:
            return entry.level
        promotions = int(entry.waited_s(now) // self._aging_interval_s)
        return max(0, entry.level - promotions)

    def peek_next(self, now: float) -> QueuedRequest | None:
        # A class competes as its oldest entry (which aging lifts first), exactly as with one FIFO per
        # class; the entry it then gives up is its fair-share pick, so aging never overrides the shares
        # (nor a tenant's order).
        best_key, best_queue = None, None
        for queue in self._queues.values():
            oldest = queue.oldest_head()
            if oldest is None:
                continue
            key = (self.effective_level(oldest, now), oldest.arrival_s, oldest.seq)
            if best_key is None or key < best_key:
                best_key, best_queue = key, queue
        return best_queue.fair_pick(now) if best_queue is not None else None

    def peek_class(self, class_name: str, now: float) -> QueuedRequest | None:
        """The request of one class its fair share serves next, or None."""
        return self._queues[self._classes.get(class_name).name].fair_pick(now)

    def pop_next(self, now: float) -> QueuedRequest | None:
        entry = self.peek_next(now)
        if entry is not None:
            self.take(entry.request_id)
        return entry

    def take(self, request_id: str) -> QueuedRequest | None:
        """Remove a request to serve it (one that `peek_next` or `peek_class` gave): its tenant spends its
        first turn, and its class's virtual time moves to that turn's start tag. None if it was not queued."""
        entry = self._where.get(request_id)
        if entry is None:
            return None
        turn = self._discard(entry, served=True)
        queue = self._queues[entry.class_name]
        queue.virtual_time = max(queue.virtual_time, turn)
        return entry

    def last_below(self, class_name: str, now: float) -> QueuedRequest | None:
        """What a full queue sheds to make room for a `class_name` request: in the lowest non-empty class
        below it, the entry fair queuing would serve last, of the tenant most over its fair share (the
        latest last turn): its newest, or its oldest once that one is too late for its TTFT target."""
        ranked = self._classes.by_rank()
        for below in reversed(ranked[self._classes.level_of(class_name) + 1:]):
            entry = self._queues[below.name].last_pick(now)
            if entry is not None:
                return entry
        return None

    def remove(self, request_id: str) -> bool:
        """Drop a queued request (e.g. the client disconnected); False if it was not queued. Its tenant gives
        up its last turn and keeps its finish tag: a removal gives no credit to what it sends next."""
        entry = self._where.get(request_id)
        if entry is None:
            return False
        self._discard(entry, served=False)
        return True

    def expired(self, now: float, ahead_s: float = 0.0) -> list[QueuedRequest]:
        """Remove and return entries that waited longer than their class's queue deadline, or will have
        within `ahead_s` (a caller that checks every `ahead_s` refuses none later than its deadline)."""
        expired: list[QueuedRequest] = []
        for class_name, queue in self._queues.items():
            deadline_s = self._classes.get(class_name).queue_deadline_s
            for tenant in queue.active.values():
                # FIFO order means arrival order, so the first fresh entry ends the scan.
                for entry in tenant.fifo.values():  # no copy: this runs every few ms on queues of thousands
                    if entry.waited_s(now) + ahead_s <= deadline_s:
                        break
                    expired.append(entry)
        for entry in expired:
            self._discard(entry, served=False)
        return sorted(expired, key=lambda e: e.seq)

    def depth_by_class(self) -> dict[str, int]:
        """Queued request count for every configured class, highest class first."""
        return {name: queue.depth for name, queue in self._queues.items()}

    def depth_by_tenant(self) -> dict[str, dict[str, int]]:
        """Queued request count per tenant with queued requests, per class."""
        depths: dict[str, dict[str, int]] = {}
        for class_name, queue in self._queues.items():
            for name, tenant in queue.active.items():
                depths.setdefault(name, {})[class_name] = len(tenant.fifo)
        return depths

    def depth_at_or_above(self, class_name: str) -> int:
        """Requests queued in `class_name` or any higher class (ignores aging)."""
        level = self._classes.level_of(class_name)
        return sum(self._queues[c.name].depth for c in self._classes.by_rank()[: level + 1])

    def ahead_of(self, class_name: str, tenant: str | None, weight: float) -> int:
        """Queued requests served before a new `class_name` request of `tenant` (None: a tenant with nothing
        queued) of `weight`, ignoring aging: all of the higher classes, and of each tenant u of the class
        what fair queuing serves before the tenant's (depth + 1)-th: min(depth_u, (depth + 1) * weight_u / weight)."""
        level = self._classes.level_of(class_name)
        higher = sum(self._queues[c.name].depth for c in self._classes.by_rank()[:level])
        queue = self._queues[class_name]
        own = queue.active.get(tenant)
        turns = (len(own.fifo) if own is not None else 0) + 1
        same_class = sum(min(len(u.fifo), turns * u.weight / weight) for u in queue.active.values())
        return higher + math.floor(same_class + 1e-9)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._where

    def __len__(self) -> int:
        return len(self._where)

    def _discard(self, entry: QueuedRequest, served: bool) -> float:
        """Remove the entry; the turn it took: the tenant's first when served, its last otherwise."""
        queue = self._queues[entry.class_name]
        tenant = queue.tenants[entry.tenant]
        del tenant.fifo[entry.request_id]
        turn = tenant.turns.popleft() if served else tenant.turns.pop()
        if not tenant.fifo:
            del queue.active[entry.tenant]
        queue.depth -= 1
        del self._where[entry.request_id]
        return turn
