"""How far ahead a periodic deadline sweep looks, so that no queued request waits past its deadline.

A sweep every `period_s` that refuses what expires within `period_s` is on time only if the loop
wakes it on time. Under a flood it does not: on one H200 (low class at ~69 requests/s, 15 s
deadline) the 50 ms sweep ran late and a refused request had waited 15.026 s. So the sweep looks
ahead by the longest gap between its recent runs, with a margin, never less than its period: a
request is then refused up to a few tenths of a second early, never late while the loop's lateness
stays near what it was lately. No Ray, vLLM or asyncio import; every time is the caller's.
"""
from __future__ import annotations

from collections import deque


class DeadlineSweep:
    def __init__(self, period_s: float, now: float, remembered_gaps: int = 40, margin: float = 1.5) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        if remembered_gaps < 1:
            raise ValueError(f"remembered_gaps must be >= 1, got {remembered_gaps}")
        if margin < 1:
            raise ValueError(f"margin must be >= 1, got {margin}")
        self.period_s = period_s
        self._margin = margin
        self._last_run_at = now
        self._gaps: deque[float] = deque(maxlen=remembered_gaps)

    def look_ahead_s(self, now: float) -> float:
        """Record a sweep running at `now`; how far ahead of `now` it refuses what will have expired."""
        self._gaps.append(max(0.0, now - self._last_run_at))
        self._last_run_at = now
        return self._margin * max(self.period_s, max(self._gaps))
