import json
from dataclasses import replace

import pytest

from serve_app.memory.sweep_profile import (
    BatchProfile,
    SweepPoint,
    choose_batch_size,
    knee,
    largest_batch_meeting_slo,
    load_sweep_profile,
    pareto_front,
    percentile,
    point_from_samples,
)


def point(batch: int, tok_s: float, e2e_p99: float = 1.0, ttft_p99: float = 0.1, tpot_p99: float = 0.01,
          preemptions: int = 0) -> SweepPoint:
    return SweepPoint(batch_size=batch, output_tokens_per_s=tok_s, request_latency_p50_s=e2e_p99 * 0.9,
                      request_latency_p99_s=e2e_p99, ttft_p50_s=ttft_p99 * 0.5, ttft_p99_s=ttft_p99,
                      tpot_p50_s=tpot_p99 * 0.9, tpot_p99_s=tpot_p99, peak_kv_cache_usage=batch / 512,
                      preemptions=preemptions)


# H100, synthetic Llama-2-7B AWQ, bare engine, 256 in / 256 out: measured throughputs; the
# latencies are hand-made to match them (e2e ~ 256 * B / tok/s).
H100_LLAMA2 = BatchProfile(
    points=(
        point(1, 258.0, e2e_p99=0.99, ttft_p99=0.02, tpot_p99=0.0038),
        point(16, 2934.0, e2e_p99=1.40, ttft_p99=0.06, tpot_p99=0.0053),
        point(64, 6135.0, e2e_p99=2.67, ttft_p99=0.20, tpot_p99=0.0097),
        point(256, 8017.0, e2e_p99=8.17, ttft_p99=0.80, tpot_p99=0.0290),
    ),
    model="llama2-7b-awq", gpu="NVIDIA H100 80GB HBM3", input_len=256, output_len=256,
)


def sizes(points) -> list[int]:
    return [p.batch_size for p in points]


# --- SweepPoint / BatchProfile ---------------------------------------------------------------

def test_point_rejects_zero_batch_and_negative_or_nan_values():
    with pytest.raises(ValueError, match="batch_size"):
        point(0, 10.0)
    with pytest.raises(ValueError, match="output_tokens_per_s"):
        point(1, -1.0)
    with pytest.raises(ValueError, match="ttft_p99_s"):
        replace(point(1, 10.0), ttft_p99_s=float("nan"))


def test_profile_sorts_points_by_batch_size():
    profile = BatchProfile(points=(point(8, 3.0), point(1, 1.0), point(4, 2.0)), model="m", gpu="cpu",
                           input_len=16, output_len=8)
    assert sizes(profile.points) == [1, 4, 8]


def test_profile_rejects_duplicate_batch_sizes_and_no_points():
    with pytest.raises(ValueError, match="duplicate"):
        BatchProfile(points=(point(4, 1.0), point(4, 2.0)), model="m", gpu="cpu", input_len=1, output_len=2)
    with pytest.raises(ValueError, match="at least one"):
        BatchProfile(points=(), model="m", gpu="cpu", input_len=1, output_len=2)


def test_json_round_trip_is_exact():
    text = H100_LLAMA2.to_json()
    data = json.loads(text)
    assert data["model"] == "llama2-7b-awq" and data["gpu"] == "NVIDIA H100 80GB HBM3"
    assert data["input_len"] == 256 and data["output_len"] == 256
    assert [p["output_tokens_per_s"] for p in data["points"]] == [258.0, 2934.0, 6135.0, 8017.0]
    assert BatchProfile.from_json(text) == H100_LLAMA2


def test_load_sweep_profile_reads_the_profile_key(tmp_path):
    path = tmp_path / "batch_sweep.json"
    path.write_text(json.dumps({"command": "python benchmarks/batch_sweep.py", "profile": H100_LLAMA2.to_dict()}))
    assert load_sweep_profile(path) == H100_LLAMA2


# --- samples -> point --------------------------------------------------------------------------

def test_percentile_interpolates_linearly():
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == pytest.approx(3.97)
    assert percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_point_from_samples():
    p = point_from_samples(batch_size=2, wall_s=0.5, output_tokens=16, ttfts_s=[0.1, 0.3], tpots_s=[0.02, 0.04],
                           latencies_s=[0.4, 0.5], peak_kv_cache_usage=0.25, preemptions=1)
    assert p.output_tokens_per_s == 32.0
    assert p.ttft_p50_s == pytest.approx(0.2) and p.ttft_p99_s == pytest.approx(0.298)
    assert p.tpot_p50_s == pytest.approx(0.03) and p.tpot_p99_s == pytest.approx(0.0398)
    assert p.request_latency_p50_s == pytest.approx(0.45) and p.request_latency_p99_s == pytest.approx(0.499)
    assert (p.batch_size, p.peak_kv_cache_usage, p.preemptions) == (2, 0.25, 1)
    with pytest.raises(ValueError, match="wall_s"):
        point_from_samples(1, 0.0, 8, [0.1], [0.01], [0.2], 0.0, 0)


# --- Pareto set ----------------------------------------------------------------------------------

def test_pareto_front_of_the_h100_sweep_is_every_point():
    # Throughput and latency both rise with the batch: each point is a distinct trade-off.
    assert sizes(pareto_front(H100_LLAMA2.points)) == [1, 16, 64, 256]


def test_pareto_front_drops_a_slower_and_higher_latency_batch():
    points = [*H100_LLAMA2.points, point(128, 6000.0, e2e_p99=5.0)]  # worse than 64 on both
    assert sizes(pareto_front(points)) == [1, 16, 64, 256]


def test_pareto_front_drops_a_point_equal_on_one_axis_and_worse_on_the_other():
    points = [point(1, 100.0, e2e_p99=1.0), point(2, 100.0, e2e_p99=2.0), point(4, 300.0, e2e_p99=2.0)]
    assert sizes(pareto_front(points)) == [1, 4]


def test_pareto_front_keeps_identical_points():
    assert sizes(pareto_front([point(2, 100.0, e2e_p99=1.0), point(1, 100.0, e2e_p99=1.0)])) == [1, 2]


# --- knee ----------------------------------------------------------------------------------------

def test_knee_of_the_h100_sweep_is_64():
    # log2 x normalized: 0, .5, .75, 1; throughput normalized: 0, .345, .757, 1 -> only 64 is above the diagonal.
    assert knee(H100_LLAMA2.points).batch_size == 64


def test_knee_of_a_saturating_curve():
    points = [point(1, 100.0), point(2, 190.0), point(4, 200.0), point(8, 205.0)]
    assert knee(points).batch_size == 2


def test_knee_ties_go_to_the_smaller_batch():
    # normalized gaps y - x: 0, .25, .25, .25, 0
    points = [point(1, 100.0), point(2, 150.0), point(4, 175.0), point(8, 200.0), point(16, 200.0)]
    assert knee(points).batch_size == 2


def test_knee_without_saturation_is_the_largest_batch():
    # throughput linear in the batch is convex in log2(batch): nothing lies above the diagonal
    points = [point(b, 100.0 * b) for b in (1, 2, 4, 8)]
    assert knee(points).batch_size == 8


def test_knee_of_a_flat_curve_is_the_smallest_batch_and_of_one_point_that_point():
    assert knee([point(b, 50.0) for b in (1, 4, 16)]).batch_size == 1
    assert knee([point(32, 50.0)]).batch_size == 32
    with pytest.raises(ValueError):
        knee([])


# --- SLO -----------------------------------------------------------------------------------------

def test_largest_batch_meeting_slo():
    pts = H100_LLAMA2.points
    assert largest_batch_meeting_slo(pts, ttft_p99_s=0.25).batch_size == 64
    assert largest_batch_meeting_slo(pts, tpot_p99_s=0.005).batch_size == 1
    assert largest_batch_meeting_slo(pts, ttft_p99_s=1.0, tpot_p99_s=0.01).batch_size == 64
    assert largest_batch_meeting_slo(pts, ttft_p99_s=0.06).batch_size == 16  # the bound itself meets it
    assert largest_batch_meeting_slo(pts).batch_size == 256
    assert largest_batch_meeting_slo(pts, ttft_p99_s=0.01) is None


def test_choose_batch_size_takes_the_slo_batch_below_the_memory_cap():
    assert choose_batch_size(H100_LLAMA2, ttft_slo_s=1.0, tpot_slo_s=0.01, memory_cap=200) == 64


def test_choose_batch_size_never_exceeds_the_memory_cap():
    assert choose_batch_size(H100_LLAMA2, ttft_slo_s=1.0, tpot_slo_s=0.01, memory_cap=48) == 48
    assert choose_batch_size(H100_LLAMA2, ttft_slo_s=None, tpot_slo_s=None, memory_cap=1000) == 256
    assert choose_batch_size(H100_LLAMA2, ttft_slo_s=None, tpot_slo_s=None, memory_cap=1) == 1


def test_choose_batch_size_is_one_when_no_batch_meets_the_slo():
    assert choose_batch_size(H100_LLAMA2, ttft_slo_s=0.001, tpot_slo_s=None, memory_cap=200) == 1


def test_choose_batch_size_rejects_a_cap_below_one():
    with pytest.raises(ValueError, match="memory_cap"):
        choose_batch_size(H100_LLAMA2, ttft_slo_s=1.0, tpot_slo_s=0.01, memory_cap=0)
