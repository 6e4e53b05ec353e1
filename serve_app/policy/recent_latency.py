"""Latency samples of the last few seconds per priority class, for stats snapshots.

Cumulative percentiles hide *when* a class was slow; a benchmark that polls these every couple of
seconds sees the time series instead (e.g. the ingress's TTFT beside the replica's while a flood
arrives). No Ray or vLLM import; the caller passes its clock's `now`.
"""
from __future__ import annotations

from collections import deque

from serve_app.statistics import percentile


class RecentLatencies:
    """Per class, the samples observed within the last `horizon_s` (at most `max_samples` each)."""

    def __init__(self, horizon_s: float = 10.0, max_samples: int = 4096) -> None:
        if horizon_s <= 0 or max_samples <= 0:
            raise ValueError("horizon_s and max_samples must be positive")
        self._horizon_s = horizon_s
        self._max_samples = max_samples
        self._samples: dict[str, deque[tuple[float, float]]] = {}

    def add(self, class_name: str, now: float, seconds: float) -> None:
        samples = self._samples.setdefault(class_name, deque(maxlen=self._max_samples))
        samples.append((now, seconds))
        self._forget_old(samples, now)

    def summary(self, now: float) -> dict[str, dict[str, float | int | None]]:
        """Per class seen so far: sample count, p50, p99 and max over the horizon (None when empty)."""
        out = {}
        for class_name, samples in self._samples.items():
            self._forget_old(samples, now)
            values = [value for _, value in samples]
            # The max beside the percentiles: a single stall (a GC pause, a slow dispatch) shows there.
            out[class_name] = {"n": len(values), "p50_s": percentile(values, 50),
                               "p99_s": percentile(values, 99), "max_s": max(values, default=None)}
        return out

    def _forget_old(self, samples: deque[tuple[float, float]], now: float) -> None:
        while samples and now - samples[0][0] > self._horizon_s:
            samples.popleft()
