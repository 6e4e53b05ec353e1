"""When a serving process runs a full garbage collection.

Python starts a full (generation 2) collection on its own whenever the objects that survived
young collections have grown by a quarter. Under a flood that is every few seconds, and each one
walks every in-flight request's objects (Ray Serve holds ~500 per request): on an H100 host the
ingress paused 100-300 ms every ~4 s (benchmarks/results/priority_h100 run 9), which is the
high-priority TTFT tail. With a schedule, Python's automatic full collections are off; young
collections still run as usual (most garbage cycles die young) and the process collects fully
when it is quiet, or when the last full collection is `max_interval_s` old, which bounds the
garbage cycles that outlive their young generations. No Ray or vLLM import; the clock is the caller's.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FullCollectionPolicy:
    quiet_in_flight: int = 0  # at most this many requests in flight: quiet
    min_interval_s: float = 10.0  # between quiet collections (an idle process has little to collect)
    max_interval_s: float = 120.0  # a process never quiet still collects this often

    def __post_init__(self) -> None:
        if self.quiet_in_flight < 0:
            raise ValueError(f"quiet_in_flight must be >= 0, got {self.quiet_in_flight}")
        if not 0 < self.min_interval_s <= self.max_interval_s:
            raise ValueError(f"need 0 < min_interval_s <= max_interval_s, got {self.min_interval_s}, "
                             f"{self.max_interval_s}")


class FullCollectionSchedule:
    def __init__(self, policy: FullCollectionPolicy, now: float) -> None:
        self._policy = policy
        self._last_full_at = now

    def due(self, now: float, in_flight: int) -> bool:
        since = now - self._last_full_at
        if since >= self._policy.max_interval_s:
            return True
        return in_flight <= self._policy.quiet_in_flight and since >= self._policy.min_interval_s

    def collected(self, now: float) -> None:
        self._last_full_at = now
