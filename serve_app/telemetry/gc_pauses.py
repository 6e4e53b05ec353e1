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
import time
from collections.abc import Callable

from serve_app.policy.recent_latency import RecentLatencies


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


def prepare_process_for_serving(freeze_heap: bool) -> GcPauses:
    """Called at the end of a deployment's start: record pauses from now on and, if asked, freeze
    the start-up heap (that first collection is recorded too)."""
    pauses = process_gc_pauses()
    if freeze_heap:
        freeze_startup_heap()
    return pauses
