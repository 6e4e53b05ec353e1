"""Bounded global request queue: strict priority between classes, FIFO within one.

Aging lifts a waiting entry one class per `aging_interval_s`, so low classes cannot starve.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from serve_app.policy.priority_classes import PriorityClasses


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

    def waited_s(self, now: float) -> float:
        return max(0.0, now - self.arrival_s)


class PriorityRequestQueue:
    """Per-class FIFOs; pop picks the best effective level, then the earliest arrival.

    `now` must not go backwards between pushes: FIFO order per class relies on it.
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
        self._fifos: dict[str, OrderedDict[str, QueuedRequest]] = {
            c.name: OrderedDict() for c in classes.by_rank()
        }
        self._class_of_request: dict[str, str] = {}
        self._next_seq = 0
        self._last_push_s = -math.inf

    @property
    def max_size(self) -> int:
        return self._max_size

    def push(self, request_id: str, class_name: str, now: float, cost_tokens: int) -> QueuedRequest:
        level = self._classes.level_of(class_name)  # raises UnknownPriorityClass
        if request_id in self._class_of_request:
            raise ValueError(f"request {request_id!r} is already queued")
        if cost_tokens < 0:
            raise ValueError(f"cost_tokens must be >= 0, got {cost_tokens}")
        if now < self._last_push_s:
            raise ValueError(f"clock went backwards: push at {now} after {self._last_push_s}")
        if len(self._class_of_request) >= self._max_size:
            raise QueueFull(self._max_size)
        entry = QueuedRequest(request_id, class_name, level, now, cost_tokens, self._next_seq)
        self._next_seq += 1
        self._last_push_s = now
        self._fifos[class_name][request_id] = entry
        self._class_of_request[request_id] = class_name
        return entry

    def effective_level(self, entry: QueuedRequest, now: float) -> int:
        """Class level after aging; never better than level 0."""
        if self._aging_interval_s is None:
            return entry.level
        promotions = int(entry.waited_s(now) // self._aging_interval_s)
        return max(0, entry.level - promotions)

    def peek_next(self, now: float) -> QueuedRequest | None:
        # Within a class the head has waited longest, so it is that class's best candidate.
        heads = [next(iter(fifo.values())) for fifo in self._fifos.values() if fifo]
        if not heads:
            return None
        return min(heads, key=lambda e: (self.effective_level(e, now), e.arrival_s, e.seq))

    def peek_class(self, class_name: str) -> QueuedRequest | None:
        """The longest-waiting request of one class, or None."""
        fifo = self._fifos[self._classes.get(class_name).name]
        return next(iter(fifo.values()), None)

    def pop_next(self, now: float) -> QueuedRequest | None:
        entry = self.peek_next(now)
        if entry is not None:
            self._discard(entry)
        return entry

    def newest_below(self, class_name: str) -> QueuedRequest | None:
        """The latest arrival of the lowest non-empty class below `class_name`: what a full queue sheds
        to make room for a `class_name` request (it has waited least and matters least)."""
        ranked = self._classes.by_rank()
        for below in reversed(ranked[self._classes.level_of(class_name) + 1:]):
            fifo = self._fifos[below.name]
            if fifo:
                return next(reversed(fifo.values()))
        return None

    def remove(self, request_id: str) -> bool:
        """Drop a queued request (e.g. the client disconnected); False if it was not queued."""
        class_name = self._class_of_request.pop(request_id, None)
        if class_name is None:
            return False
        del self._fifos[class_name][request_id]
        return True

    def expired(self, now: float, ahead_s: float = 0.0) -> list[QueuedRequest]:
        """Remove and return entries that waited longer than their class's queue deadline, or will have
        within `ahead_s` (a caller that checks every `ahead_s` refuses none later than its deadline)."""
        expired: list[QueuedRequest] = []
        for class_name, fifo in self._fifos.items():
            deadline_s = self._classes.get(class_name).queue_deadline_s
            # FIFO order means arrival order, so the first fresh entry ends the scan.
            for entry in fifo.values():  # no copy: this runs every few ms on queues of thousands
                if entry.waited_s(now) + ahead_s <= deadline_s:
                    break
                expired.append(entry)
        for entry in expired:
            self._discard(entry)
        return sorted(expired, key=lambda e: e.seq)

    def depth_by_class(self) -> dict[str, int]:
        """Queued request count for every configured class, highest class first."""
        return {name: len(fifo) for name, fifo in self._fifos.items()}

    def depth_at_or_above(self, class_name: str) -> int:
        """Requests queued in `class_name` or any higher class (ignores aging)."""
        level = self._classes.level_of(class_name)
        return sum(len(self._fifos[c.name]) for c in self._classes.by_rank()[: level + 1])

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._class_of_request

    def __len__(self) -> int:
        return len(self._class_of_request)

    def _discard(self, entry: QueuedRequest) -> None:
        del self._fifos[entry.class_name][entry.request_id]
        del self._class_of_request[entry.request_id]
