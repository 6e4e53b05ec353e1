"""Batch-size profile choices, on the H100 figures seen for synthetic Llama-2-7B (256/256 tokens)."""
from __future__ import annotations

import pytest

from serve_app.memory.batch_profile import (BatchProfile, SweepPoint, choose_batch_size, knee,
                                            largest_batch_meeting_slo, pareto_front)


def point(batch: int, tok_s: float, ttft: float, tpot: float, latency: float) -> SweepPoint:
    return SweepPoint(batch, tok_s, ttft, tpot, latency)


H100 = BatchProfile("llama2-7b", "H100", 256, 256, (
    point(1, 258, 0.02, 0.0039, 1.0),
    point(16, 2934, 0.05, 0.0055, 1.45),
    point(64, 6135, 0.12, 0.0103, 2.75),
    point(256, 8017, 0.45, 0.0312, 8.4),
    # A dominated point: slower and no faster than batch 64.
    point(128, 6000, 0.30, 0.0200, 5.5),
))


def test_pareto_front_drops_dominated_points():
    assert [p.batch_size for p in pareto_front(H100.points)] == [1, 16, 64, 256]


def test_knee_is_smallest_batch_near_peak_throughput():
    assert knee(H100.points).batch_size == 256  # 0.9 x 8017 = 7215: only 256 reaches it
    assert knee(H100.points, share_of_max=0.75).batch_size == 64  # 6013 <= 6135


def test_largest_batch_meeting_slo():
    assert largest_batch_meeting_slo(H100.points, ttft_p99_s=0.2, tpot_p99_s=0.02).batch_size == 64
    assert largest_batch_meeting_slo(H100.points, tpot_p99_s=0.005).batch_size == 1
    assert largest_batch_meeting_slo(H100.points, ttft_p99_s=0.01) is None


@pytest.mark.parametrize(("ttft", "tpot", "cap", "expected"), [
    (1.0, 0.05, 1024, 256), (1.0, 0.05, 100, 64), (0.2, 0.02, 1024, 64), (0.001, None, 1024, 1),
])
def test_choose_batch_size_respects_slo_and_memory_cap(ttft, tpot, cap, expected):
    assert choose_batch_size(H100, ttft, tpot, cap) == expected


def test_profile_json_round_trip():
    assert BatchProfile.from_json(H100.to_json()) == H100
