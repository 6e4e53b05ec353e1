"""How busy a process and its event-loop thread were over the last seconds: CPU seconds per wall second.

Loop lag says the loop is late; it does not say why. A loop thread near 1.0 CPU second per second is
saturated by its own work (Python on every token), one well under it with a late loop waits for the GIL
or for other threads. The readings are taken on the loop thread (the watchdog's beat), so
`time.thread_time()` there is the loop's own CPU. Pure: the clocks are passed in.
"""
from __future__ import annotations

from collections import deque
from typing import NamedTuple


class CpuReading(NamedTuple):
    wall_s: float
    process_cpu_s: float
    thread_cpu_s: float


class CpuShare:
    """Readings kept for `horizon_s` (at least the newest two); the share is over the oldest kept to the newest."""

    def __init__(self, horizon_s: float = 10.0) -> None:
        if not horizon_s > 0:
            raise ValueError(f"horizon_s must be > 0, got {horizon_s}")
        self._horizon_s = horizon_s
        self._readings: deque[CpuReading] = deque()

    def add(self, reading: CpuReading) -> None:
        self._readings.append(reading)
        while len(self._readings) > 2 and reading.wall_s - self._readings[0].wall_s > self._horizon_s:
            self._readings.popleft()

    def summary(self) -> dict[str, float | None]:
        """`process` and `loop_thread`: CPU seconds per wall second over the kept readings (None before two)."""
        if len(self._readings) < 2:
            return {"process": None, "loop_thread": None, "over_s": None}
        first, last = self._readings[0], self._readings[-1]
        wall = last.wall_s - first.wall_s
        if wall <= 0:
            return {"process": None, "loop_thread": None, "over_s": None}
        return {"process": round((last.process_cpu_s - first.process_cpu_s) / wall, 3),
                "loop_thread": round((last.thread_cpu_s - first.thread_cpu_s) / wall, 3),
                "over_s": round(wall, 3)}
