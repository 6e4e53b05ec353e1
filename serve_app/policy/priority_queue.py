"""Bounded global request queue: strict priority between classes, weighted fair shares between tenants
(API keys) inside one class, FIFO within a tenant.

Aging lifts a class one level per `aging_interval_s` its oldest entry has waited, so low classes cannot
starve. Inside a class, start-time fair queuing (Goyal, Vin & Cheng, SIGCOMM 1996): each entry gets a start
tag max(class virtual time, the tenant's previous finish tag) and a finish tag start + cost / weight; the
head with the smallest start tag goes first, and the class's virtual time is the start tag last served.
A tenant that was idle restarts at the class's virtual time: no credit for the idle time, so no burst.

Cost is one request, not `cost_tokens`: the issue's goal is goodput in requests, and `cost_tokens` is an
estimate that prices a request without `max_tokens` at the whole context, which would charge the tenants
that leave it unset many times over for requests that may be short.
"""

from __future__ import annotations

import math
from collections import OrderedDict
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
    start_tag: float = 0.0  # virtual time at which fair queuing serves it

    def waited_s(self, now: float) -> float:
        return max(0.0, now - self.arrival_s)


class _Tenant:
    """One tenant's FIFO inside one class, and where its fair share has got to."""

    __slots__ = ("fifo", "weight", "finish_tag")

    def __init__(self, weight: float) -> None:
        self.fifo: OrderedDict[str, QueuedRequest] = OrderedDict()
        self.weight = weight
        self.finish_tag = 0.0

    def head(self) -> QueuedRequest:
        return next(iter(self.fifo.values()))


class _ClassQueue:
    """The tenants of one class; `active` holds those with queued entries, so a pop scans only them."""

    __slots__ = ("tenants", "active", "virtual_time", "depth")

    def __init__(self) -> None:
        self.tenants: dict[str, _Tenant] = {}  # kept while idle: the finish tag stops a closed loop from jumping ahead
        self.active: dict[str, _Tenant] = {}
        self.virtual_time = 0.0
        self.depth = 0

    def fair_head(self) -> QueuedRequest | None:
        """The entry start-time fair queuing serves next (ties: push order)."""
        best: QueuedRequest | None = None
        for tenant in self.active.values():
            head = tenant.head()
            if best is None or (head.start_tag, head.seq) < (best.start_tag, best.seq):
                best = head
        return best

    def oldest_head(self) -> QueuedRequest | None:
        heads = [tenant.head() for tenant in self.active.values()]
        return min(heads, key=lambda e: e.seq) if heads else None


class PriorityRequestQueue:
    """Per-class, per-tenant FIFOs. Pop picks the class with the best effective level (then the earliest
    oldest arrival), then inside it the tenant whose turn it is by weight.

    `now` must not go backwards between pushes: FIFO order per tenant relies on it.
    """

    def __init__(
        self,
        classes: PriorityClasses,
        max_size: int,
        aging_interval_s: float | None = None,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        if aging_interval_s is not None and not aging_interval_s > 0:
            raise ValueError(f"aging_interval_s must be > 0 or None, got {aging_interval_s}")
        self._classes = classes
        self._max_size = max_size
        self._aging_interval_s = aging_interval_s
        self._queues: dict[str, _ClassQueue] = {c.name: _ClassQueue() for c in classes.by_rank()}
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
        entry = QueuedRequest(request_id, class_name, level, now, cost_tokens, self._next_seq, tenant, start_tag)
        self._next_seq += 1
        self._last_push_s = now
        state.fifo[request_id] = entry
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
        # class; the entry it then gives up is its fair-share pick, so aging never overrides the shares.
        best_key, best_queue = None, None
        for queue in self._queues.values():
            oldest = queue.oldest_head()
            if oldest is None:
                continue
            key = (self.effective_level(oldest, now), oldest.arrival_s, oldest.seq)
            if best_key is None or key < best_key:
                best_key, best_queue = key, queue
        return best_queue.fair_head() if best_queue is not None else None

    def peek_class(self, class_name: str) -> QueuedRequest | None:
        """The request of one class its fair share serves next, or None."""
        return self._queues[self._classes.get(class_name).name].fair_head()

    def pop_next(self, now: float) -> QueuedRequest | None:
        entry = self.peek_next(now)
        if entry is not None:
            self.take(entry.request_id)
        return entry

    def take(self, request_id: str) -> QueuedRequest | None:
        """Remove a request to serve it (one that `peek_next` or `peek_class` gave): its class's virtual
        time moves to its start tag. None if it was not queued."""
        entry = self._where.get(request_id)
        if entry is None:
            return None
        self._discard(entry)
        queue = self._queues[entry.class_name]
        queue.virtual_time = max(queue.virtual_time, entry.start_tag)
        return entry

    def newest_below(self, class_name: str) -> QueuedRequest | None:
        """What a full queue sheds to make room for a `class_name` request: in the lowest non-empty class
        below it, the newest entry of the tenant most over its fair share (the last one fair queuing would
        serve: the largest start tag)."""
        ranked = self._classes.by_rank()
        for below in reversed(ranked[self._classes.level_of(class_name) + 1:]):
            tails = [next(reversed(t.fifo.values())) for t in self._queues[below.name].active.values()]
            if tails:
                return max(tails, key=lambda e: (e.start_tag, e.seq))
        return None

    def remove(self, request_id: str) -> bool:
        """Drop a queued request (e.g. the client disconnected); False if it was not queued. Its tenant keeps
        its finish tag: a removal gives no credit (an unserved request charged is bounded by the queue)."""
        entry = self._where.get(request_id)
        if entry is None:
            return False
        self._discard(entry)
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
            self._discard(entry)
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

    def _discard(self, entry: QueuedRequest) -> None:
        queue = self._queues[entry.class_name]
        tenant = queue.tenants[entry.tenant]
        del tenant.fifo[entry.request_id]
        if not tenant.fifo:
            del queue.active[entry.tenant]
        queue.depth -= 1
        del self._where[entry.request_id]
