"""A replica's recent KV cache events, numbered, for the ingress replicas that route by them.

Each ingress replica pulls what it has not seen (`since`) with its own cursor, so the replica needs no
list of ingress replicas and an ingress that starts late or falls behind still converges: when its
cursor is older than what the log keeps, its page starts with `AllCleared` and it rebuilds that
replica's part of its index from the events kept (blocks stored before then stay unknown until stored
again, which costs cache hits, never correctness). Pure: no vLLM, Ray or ZMQ.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice

from serve_app.policy.prefix_cache_index import AllCleared, CacheEvent

DEFAULT_KEPT_EVENTS = 50_000


@dataclass(frozen=True)
class KvEventPage:
    """Events after an ingress's cursor; `next_seq` is its cursor for the next pull."""

    events: list[CacheEvent]
    next_seq: int
    block_size: int | None = None
    capacity_blocks: int | None = None  # the engine's KV cache size, which bounds the index's part for it


@dataclass
class KvEventLog:
    kept: int = DEFAULT_KEPT_EVENTS
    block_size: int | None = None
    capacity_blocks: int | None = None
    _events: deque = field(default_factory=deque)
    _first_seq: int = 0  # the number of the oldest event kept

    def __post_init__(self) -> None:
        if self.kept < 1:
            raise ValueError(f"kept must be >= 1, got {self.kept}")

    @property
    def next_seq(self) -> int:
        return self._first_seq + len(self._events)

    def append(self, events: Iterable[CacheEvent]) -> None:
        for event in events:
            self._events.append(event)
            if len(self._events) > self.kept:
                self._events.popleft()
                self._first_seq += 1

    def since(self, seq: int) -> KvEventPage:
        """What came after event `seq - 1`; from a cursor the log no longer covers (or one from another
        life of this replica, ahead of it), everything kept after an `AllCleared`."""
        if self._first_seq <= seq <= self.next_seq:
            events = list(islice(self._events, seq - self._first_seq, None))
        else:
            events = [AllCleared(), *self._events]
        return KvEventPage(events, self.next_seq, self.block_size, self.capacity_blocks)
