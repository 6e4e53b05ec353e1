"""Latency samples of the last few seconds per priority class, for stats snapshots.

Cumulative percentiles hide *when* a class was slow; a benchmark that polls these every couple of
seconds sees the time series instead (e.g. the ingress's TTFT beside the replica's while a flood
arrives). No Ray or vLLM import; the caller passes its clock's `now`.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable, Sequence

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

    def summary(self, now: float, within_s: float | None = None) -> dict[str, dict[str, float | int | None]]:
        """Per class seen so far: sample count, p50, p99 and max over the horizon, or its last `within_s`
        seconds (None when empty)."""
        out = {}
        for class_name, samples in self._samples.items():
            self._forget_old(samples, now)
            values = [value for at, value in samples if within_s is None or now - at <= within_s]
            # The max beside the percentiles: a single stall (a GC pause, a slow dispatch) shows there.
            out[class_name] = {"n": len(values), "p50_s": percentile(values, 50),
                               "p99_s": percentile(values, 99), "max_s": max(values, default=None)}
        return out

    def _forget_old(self, samples: deque[tuple[float, float]], now: float) -> None:
        while samples and now - samples[0][0] > self._horizon_s:
            samples.popleft()


class RecentInterTokenTimes:
    """An engine's inter-token times over the last `horizon_s`, summed per step (one entry per step, not
    per token: this runs for every engine step). Each step gives every decoding request one token, so
    their mean is the batch's current speed, which a finished request's TPOT averages over its whole life
    (and, for a short output, over a few steps). The mean is kept as running sums: it is read at every
    request's end. The replica (`engine_stats`) and the simulator's replica both keep one; `now` defaults
    to `clock()`."""

    def __init__(self, horizon_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._horizon_s = horizon_s
        self._clock = clock
        self._steps: deque[tuple[float, float, int, float]] = deque()  # (at, total, tokens, largest)
        self._total_s = 0.0
        self._tokens = 0

    def add(self, inter_token_times_s: Sequence[float], now: float | None = None) -> None:
        """One step's inter-token times (nothing for a step without decoding requests)."""
        if inter_token_times_s:
            self.add_step(sum(inter_token_times_s), len(inter_token_times_s), max(inter_token_times_s), now)

    def add_step(self, total_s: float, tokens: int, largest_s: float, now: float | None = None) -> None:
        """One step's `tokens` inter-token times, summed to `total_s`, the largest `largest_s`."""
        now = self._clock() if now is None else now
        self._steps.append((now, total_s, tokens, largest_s))
        self._total_s += total_s
        self._tokens += tokens
        self._forget_old(now)

    def mean_s(self, now: float | None = None) -> float | None:
        """The mean inter-token time over the horizon; None with no token in it."""
        self._forget_old(self._clock() if now is None else now)
        return self._total_s / self._tokens if self._tokens > 0 else None

    def summary(self, now: float | None = None) -> dict[str, float | int | None]:
        """Tokens seen over the horizon and their mean and largest inter-token time (None with none)."""
        mean = self.mean_s(now)
        return {"tokens": self._tokens, "mean_s": mean, "max_s": max((step[3] for step in self._steps), default=None)}

    def _forget_old(self, now: float) -> None:
        steps = self._steps
        while steps and now - steps[0][0] > self._horizon_s:
            _, total_s, tokens, _ = steps.popleft()
            self._total_s -= total_s
            self._tokens -= tokens
