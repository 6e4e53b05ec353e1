"""What the cluster shows an autoscaler each control period, and the autoscaler's contract."""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class ClusterSignals:
    """One control period's view; averages are over the look-back window."""

    now: float
    running_replicas: int  # started and routable
    target_replicas: int  # the current target (running + starting)
    ongoing_requests: Mapping[str, float]  # per running replica: requests the router has in flight there
    total_ongoing_requests: float  # sum over replicas, time-averaged over the look-back window
    queue_depth: Mapping[str, int]  # router queue per class, now
    kv_cache_usage: Mapping[str, float]  # per running replica, 0..1, now
    slo_attainment: Mapping[str, float] = field(default_factory=dict)  # per class, over the look-back window
    slo_samples: Mapping[str, int] = field(default_factory=dict)  # per class, requests judged
    arrival_rate_rps: float = 0.0  # over the look-back window
    # Per class over the look-back window: arrivals, and those refused for capacity (429 at the door,
    # 503 shed or past the queue deadline) -- the router's counters the real app reports.
    class_arrival_rate_rps: Mapping[str, float] = field(default_factory=dict)
    class_refused_rate_rps: Mapping[str, float] = field(default_factory=dict)


class Autoscaler(Protocol):
    """Called every control period with the signals; returns the target replica count."""

    def __call__(self, signals: ClusterSignals) -> int: ...


class WindowCounts:
    """Per key, how many events of the last `window_s` seconds (O(1) amortized per event and query)."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._events: deque[tuple[float, str, int]] = deque()
        self._counts: dict[str, int] = {}

    def add(self, now: float, key: str, n: int = 1) -> None:
        self._events.append((now, key, n))
        self._counts[key] = self._counts.get(key, 0) + n

    def counts(self, now: float) -> dict[str, int]:
        while self._events and self._events[0][0] < now - self._window_s:
            _, key, n = self._events.popleft()
            self._counts[key] -= n
        return {key: n for key, n in self._counts.items() if n}


class LookBack:
    """Samples over the last `window_s` seconds (time-average of per-key values)."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._samples: deque[tuple[float, dict[str, float]]] = deque()

    def add(self, now: float, values: dict[str, float]) -> None:
        self._samples.append((now, values))
        while self._samples and self._samples[0][0] < now - self._window_s:
            self._samples.popleft()

    def mean(self) -> dict[str, float]:
        """Per key, the mean over samples where it appears (a new replica averages its own samples)."""
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for _, values in self._samples:
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
        return {key: sums[key] / counts[key] for key in sums}

    def mean_total(self) -> float:
        if not self._samples:
            return 0.0
        return sum(sum(values.values()) for _, values in self._samples) / len(self._samples)
