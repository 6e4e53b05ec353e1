"""The slowest first parts per priority class since the ingress started, each with its way by stage.

The recent-path summary (`RequestTelemetry.first_part_path`) gives percentiles over the last seconds, all
classes together; a benchmark samples it at the end of a load. A rare slow first token of the top class in
the middle of a flood (four of 80 high requests at ~240 ms on one H200, the rest under 175 ms) is lost in
it. These records keep such outliers, with the wall-clock time they were written and where they waited."""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping

KEPT_PER_CLASS = 8


class SlowestFirstParts:
    def __init__(self, kept_per_class: int = KEPT_PER_CLASS) -> None:
        self._kept = kept_per_class
        self._by_class: dict[str, list[tuple[float, int, dict]]] = {}
        self._order = itertools.count()  # ties broken by arrival, never by comparing the records

    def add(self, class_name: str, stages: Mapping[str, float], written: float) -> None:
        """One first part's stages (seconds, with `total`), written out at `written` (wall clock)."""
        total = stages.get("total")
        if total is None:
            return
        heap = self._by_class.setdefault(class_name, [])
        if len(heap) >= self._kept and total <= heap[0][0]:
            return
        record = {"written": round(written, 3), **{stage: round(seconds * 1000, 2) for stage, seconds in stages.items()}}
        entry = (total, next(self._order), record)
        if len(heap) < self._kept:
            heapq.heappush(heap, entry)
        else:
            heapq.heapreplace(heap, entry)

    def summary(self) -> dict[str, list[dict]]:
        """Per class, the kept first parts slowest first: `written` (wall clock, s) and each stage in ms."""
        return {class_name: [record for _, _, record in sorted(heap, key=lambda entry: (-entry[0], entry[1]))]
                for class_name, heap in sorted(self._by_class.items())}
