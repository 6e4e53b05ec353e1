"""How far ahead a periodic deadline sweep looks, so that no queued request waits past its deadline.

A sweep every `period_s` that refuses what expires within `period_s` is on time only if the loop
wakes it on time. Under a flood it does not: on one H200 (low class at ~69 requests/s, 15 s
deadline) the 50 ms sweep ran late and a refused request had waited 15.026 s. So the sweep looks
ahead by its typical gap lately (the median of its last runs' gaps, never less than its period), with
a margin, and at most `max_ahead_s`: a loop that is steadily late refuses a little early instead of
late, while one stall (a GC pause, a starved machine) does not make every later sweep refuse early:
refusing early shortens the queue, and admission then takes in requests that will be refused later.
No Ray, vLLM or asyncio import; every time is the caller's.
"""
from __future__ import annotations

from collections import deque
from statistics import median


class DeadlineSweep:
    def __init__(self, period_s: float, now: float, remembered_gaps: int = 40, margin: float = 1.5,
                 max_ahead_s: float = 0.25) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        if remembered_gaps < 1:
            raise ValueError(f"remembered_gaps must be >= 1, got {remembered_gaps}")
        if margin < 1:
            raise ValueError(f"margin must be >= 1, got {margin}")
        if max_ahead_s < period_s:
            raise ValueError(f"max_ahead_s must be >= period_s, got {max_ahead_s} < {period_s}")
        self.period_s = period_s
        self._margin = margin
        self._max_ahead_s = max_ahead_s
        self._last_run_at = now
        self._gaps: deque[float] = deque(maxlen=remembered_gaps)

    def look_ahead_s(self, now: float) -> float:
        """Record a sweep running at `now`; how far ahead of `now` it refuses what will have expired."""
        self._gaps.append(max(0.0, now - self._last_run_at))
        self._last_run_at = now
        return min(self._max_ahead_s, self._margin * max(self.period_s, median(self._gaps)))
