"""The ingress keeps each class's slowest first parts since start, with their stages (a flood's outliers)."""
from __future__ import annotations

from serve_app.telemetry.slowest_first_parts import SlowestFirstParts


def _stages(total_s: float, replica_s: float) -> dict[str, float]:
    return {"before_dispatch": 0.0003, "replica_to_first_token": replica_s, "total": total_s}


def test_each_class_keeps_its_slowest_first_parts_slowest_first_with_stages_in_ms():
    slowest = SlowestFirstParts(kept_per_class=3)
    for i, total in enumerate([0.08, 0.24, 0.09, 0.25, 0.10, 0.07, 0.239]):
        slowest.add("high", _stages(total, total - 0.01), written=1000.0 + i)
    slowest.add("low", _stages(9.5, 0.1), written=1003.5)
    summary = slowest.summary()
    assert [r["total"] for r in summary["high"]] == [250.0, 240.0, 239.0]
    assert [r["written"] for r in summary["high"]] == [1003.0, 1001.0, 1006.0]
    assert summary["high"][0]["replica_to_first_token"] == 240.0 and summary["high"][0]["before_dispatch"] == 0.3
    assert [r["total"] for r in summary["low"]] == [9500.0]  # the low class's waits do not push the high ones out


def test_a_first_part_without_a_total_is_not_kept_and_ties_keep_the_earlier():
    slowest = SlowestFirstParts(kept_per_class=1)
    slowest.add("high", {"before_dispatch": 0.5}, written=1.0)
    assert slowest.summary() == {}
    slowest.add("high", _stages(0.2, 0.1), written=2.0)
    slowest.add("high", _stages(0.2, 0.1), written=3.0)
    assert [r["written"] for r in slowest.summary()["high"]] == [2.0]
