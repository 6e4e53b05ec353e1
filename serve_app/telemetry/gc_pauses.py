"""Python garbage-collector pauses of one process, and freezing the heap built at start-up.

A full (generation 2) collection walks every tracked object, and a serving process holds
hundreds of thousands from its imports alone (Ray, FastAPI, transformers, vLLM). While it runs,
no request of that process moves, so its length lands on first tokens. vLLM's own API server and
engine freeze the start-up heap for this reason (`vllm.utils.gc_utils.freeze_gc_heap`); our Ray
Serve processes do the same after their start, and record every pause so a benchmark can see them
beside the latency they cause. No Ray or vLLM import; the clock is injected.
"""
from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from serve_app.policy.gc_schedule import FullCollectionPolicy, FullCollectionSchedule
from serve_app.policy.recent_latency import RecentLatencies
from serve_app.telemetry.loop_watchdog import LoopWatchdog, watch_running_loop

if TYPE_CHECKING:
    from serve_app.config import ProcessSettings


def freeze_startup_heap() -> int:
    """Collect once, then move every surviving object out of the collector's reach (it is still
    freed by reference counting). Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class GcPauses:
    """Times each collection through `gc.callbacks`; per generation, the last seconds' pauses
    (`recent`) and totals since start (`count`, `total_s`, `max_s`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, horizon_s: float = 10.0) -> None:
        self._clock = clock
        self._recent = RecentLatencies(horizon_s)
        self._started_at: float | None = None
        self._totals: dict[str, dict[str, float]] = {}
        self._installed = False

    def install(self) -> GcPauses:
        if not self._installed:
            gc.callbacks.append(self.on_gc)
            self._installed = True
        return self

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self.on_gc)
            self._installed = False

    def on_gc(self, phase: str, info: dict) -> None:
        """`gc.callbacks` signature. Runs inside the collector: records, nothing more."""
        if phase == "start":
            self._started_at = self._clock()
            return
        if phase != "stop" or self._started_at is None:
            return
        now = self._clock()
        pause_s = now - self._started_at
        self._started_at = None
        generation = f"gen{info.get('generation', '?')}"
        self._recent.add(generation, now, pause_s)
        totals = self._totals.setdefault(generation, {"count": 0, "total_s": 0.0, "max_s": 0.0})
        totals["count"] += 1
        totals["total_s"] += pause_s
        totals["max_s"] = max(totals["max_s"], pause_s)

    def summary(self) -> dict:
        """Per generation seen: totals since start and the recent window (n, p50, p99, max)."""
        recent = self._recent.summary(self._clock())
        return {generation: {**totals, "recent": recent.get(generation)}
                for generation, totals in sorted(self._totals.items())}

    def recent_max_s(self) -> float | None:
        """Longest pause of any generation within the recent window; None if there was none."""
        pauses = [summary["max_s"] for summary in self._recent.summary(self._clock()).values()
                  if summary["max_s"] is not None]
        return max(pauses, default=None)


_process_pauses: GcPauses | None = None


def process_gc_pauses() -> GcPauses:
    """The one recorder of this process (every deployment in it shares the collector)."""
    global _process_pauses
    if _process_pauses is None:
        _process_pauses = GcPauses().install()
    return _process_pauses


# Python's generation-2 threshold counts young collections since the last full one; this many
# never comes, so only the schedule starts full collections.
NO_AUTOMATIC_FULL_COLLECTIONS = 1_000_000_000


def schedule_full_collections(policy: FullCollectionPolicy, in_flight: Callable[[], int],
                              check_period_s: float = 1.0, stop: threading.Event | None = None) -> threading.Thread:
    """Turns Python's automatic full collections off and runs them from a daemon thread when
    `FullCollectionSchedule` says so (the collector holds the GIL, so it pauses the event loop
    just as an automatic one would, only at a chosen moment)."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NO_AUTOMATIC_FULL_COLLECTIONS)
    schedule = FullCollectionSchedule(policy, time.monotonic())
    stop = stop or threading.Event()

    def collect_when_due() -> None:
        while not stop.wait(check_period_s):
            now = time.monotonic()
            try:
                busy = in_flight()
            except Exception:  # the count is read across threads; a failed read counts as busy
                busy = policy.quiet_in_flight + 1
            if schedule.due(now, busy):
                gc.collect(2)
                schedule.collected(time.monotonic())

    thread = threading.Thread(target=collect_when_due, name="scheduled-full-gc", daemon=True)
    thread.start()
    return thread


@dataclass(frozen=True)
class ServingProcessTelemetry:
    gc_pauses: GcPauses
    loop_watchdog: LoopWatchdog | None  # None: `loop_stall_warning_s` is 0, or no loop ran at the start

    def loop_stalls(self) -> dict | None:
        return self.loop_watchdog.summary() if self.loop_watchdog is not None else None


def prepare_process_for_serving(settings: ProcessSettings, in_flight: Callable[[], int]) -> ServingProcessTelemetry:
    """Called at the end of a deployment's (async) start: record pauses from now on, freeze the start-up
    heap if asked (that first collection is recorded too), schedule full collections if asked, and
    watch the running event loop for stalls.
    `in_flight`: the process's requests in flight now (called from another thread: a plain read)."""
    pauses = process_gc_pauses()
    if settings.freeze_gc_after_start:
        freeze_startup_heap()
    if settings.full_gc == "scheduled":
        schedule_full_collections(FullCollectionPolicy(settings.full_gc_quiet_in_flight,
                                                       settings.full_gc_min_interval_s,
                                                       settings.full_gc_max_interval_s), in_flight)
    return ServingProcessTelemetry(pauses, watch_running_loop(settings.loop_stall_warning_s))
