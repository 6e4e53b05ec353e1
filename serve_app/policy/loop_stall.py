"""When a process's event loop counts as stalled, and what a stall report carries.

A task on the loop beats every fraction of a second; a watchdog outside the loop checks that the
last beat is recent. A beat older than `threshold_s` is a stall: reported once while it lasts (with
a stack dump, rate-limited, since a serving process can stall often under a flood), and measured
when the loop beats again. A stall no check saw while it lasted (`seen_while_stopped` false) means
the watchdog could not run either: some thread held the GIL throughout. No Ray, vLLM or asyncio
import; every time is the caller's.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StallReport:
    """A stall still going on, as one check saw it."""
    last_beat_at: float
    stopped_for_s: float
    dump_stacks: bool  # false: a stack dump was written less than `stack_dump_interval_s` ago


@dataclass(frozen=True)
class FinishedStall:
    """A stall the loop came back from; `length_s` is the time between the beats around it."""
    length_s: float
    seen_while_stopped: bool


@dataclass(frozen=True)
class StallTotals:
    stalls: int = 0
    unseen_stalls: int = 0  # finished stalls that no check saw while they lasted
    max_stall_s: float = 0.0
    last_stall_s: float | None = None


class StallDetector:
    def __init__(self, threshold_s: float, now: float, stack_dump_interval_s: float = 60.0) -> None:
        if threshold_s <= 0:
            raise ValueError(f"threshold_s must be > 0, got {threshold_s}")
        if stack_dump_interval_s < 0:
            raise ValueError(f"stack_dump_interval_s must be >= 0, got {stack_dump_interval_s}")
        self.threshold_s = threshold_s
        self._stack_dump_interval_s = stack_dump_interval_s
        self._last_beat_at = now
        self._reported_current = False
        self._last_dump_at: float | None = None
        self.totals = StallTotals()

    def beat(self, now: float) -> FinishedStall | None:
        """The loop ran at `now`. Returns the stall that this beat ends, if the gap was one."""
        gap_s = now - self._last_beat_at
        seen = self._reported_current
        self._last_beat_at = now
        self._reported_current = False
        if gap_s <= self.threshold_s:
            return None
        totals = self.totals
        self.totals = StallTotals(stalls=totals.stalls + 1, unseen_stalls=totals.unseen_stalls + (not seen),
                                  max_stall_s=max(totals.max_stall_s, gap_s), last_stall_s=gap_s)
        return FinishedStall(gap_s, seen)

    def check(self, now: float) -> StallReport | None:
        """A report the first time a check sees the current stall; None otherwise."""
        stopped_for_s = now - self._last_beat_at
        if stopped_for_s <= self.threshold_s or self._reported_current:
            return None
        self._reported_current = True
        dump = self._last_dump_at is None or now - self._last_dump_at >= self._stack_dump_interval_s
        if dump:
            self._last_dump_at = now
        return StallReport(self._last_beat_at, stopped_for_s, dump)
