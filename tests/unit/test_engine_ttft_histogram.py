"""vLLM's TTFT histogram as `vllm serve` exposes it and as Ray's metrics port exports our replicas' (summed over
engines and replicas), the difference between two readings, and its quantiles and tail shares as Prometheus
estimates them."""
from __future__ import annotations

import pytest

from autoscaling.bench.prometheus_metrics import (ENGINE_TTFT_HISTOGRAM, RAY_ENGINE_TTFT_HISTOGRAM, histogram_count,
                                                  histogram_cumulative, histogram_delta, histogram_quantile,
                                                  share_above)

BOUNDS = ("0.02", "0.04", "0.06", "0.08", "0.1", "+Inf")


def vllm_text(counts: tuple[int, ...]) -> str:
    lines = ["# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.",
             "# TYPE vllm:time_to_first_token_seconds histogram"]
    lines += [f'vllm:time_to_first_token_seconds_bucket{{engine="0",le="{le}",model_name="m"}} {n}.0'
              for le, n in zip(BOUNDS, counts)]
    lines += [f'vllm:time_to_first_token_seconds_count{{engine="0",model_name="m"}} {counts[-1]}.0',
              'vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 1.5']
    return "\n".join(lines) + "\n"


def ray_text(per_replica: dict[str, tuple[int, ...]]) -> str:
    lines = ["# HELP ray_vllm_time_to_first_token_seconds Histogram of time to first token in seconds.",
             "# TYPE ray_vllm_time_to_first_token_seconds histogram"]
    for replica, counts in per_replica.items():
        lines += [f'ray_vllm_time_to_first_token_seconds_bucket{{ReplicaId="{replica}",SessionName="s",le="{le}"}} '
                  f'{n}.0' for le, n in zip(BOUNDS, counts)]
    return "\n".join(lines) + "\n"


def test_vllm_serves_histogram_and_the_ray_exported_one_read_alike_summed_over_replicas():
    assert histogram_cumulative(vllm_text((1, 5, 9, 10, 10, 10)), ENGINE_TTFT_HISTOGRAM)[0.04] == 5
    ours = histogram_cumulative(ray_text({"a": (1, 5, 9, 10, 10, 10), "b": (0, 2, 2, 3, 4, 4)}),
                                RAY_ENGINE_TTFT_HISTOGRAM)
    assert ours == {0.02: 1, 0.04: 7, 0.06: 11, 0.08: 13, 0.1: 14, float("inf"): 14}
    assert histogram_cumulative("<html>bad gateway</html>", ENGINE_TTFT_HISTOGRAM) == {}


def test_a_load_points_own_observations_are_the_difference_of_two_readings():
    before = histogram_cumulative(vllm_text((1, 5, 9, 10, 10, 10)), ENGINE_TTFT_HISTOGRAM)
    after = histogram_cumulative(vllm_text((1, 45, 129, 178, 199, 210)), ENGINE_TTFT_HISTOGRAM)
    point = histogram_delta(before, after)
    assert histogram_count(point) == 200
    assert point == {0.02: 0, 0.04: 40, 0.06: 120, 0.08: 168, 0.1: 189, float("inf"): 200}


def test_quantiles_interpolate_within_a_bucket_and_tail_shares_read_a_bound():
    point = {0.02: 0.0, 0.04: 40.0, 0.06: 120.0, 0.08: 168.0, 0.1: 189.0, float("inf"): 200.0}
    assert histogram_quantile(point, 0.5) == pytest.approx(0.055)  # rank 100: 60 of the 80 in (0.04, 0.06]
    assert histogram_quantile(point, 0.2) == pytest.approx(0.04)
    assert histogram_quantile(point, 0.99) == pytest.approx(0.1)  # past the largest finite bound: that bound
    assert share_above(point, 0.06) == pytest.approx(0.4) and share_above(point, 0.1) == pytest.approx(0.055)
    assert share_above(point, 0.07) is None  # not a bound of this histogram
    assert histogram_quantile({}, 0.5) is None and share_above({float("inf"): 0.0}, 0.1) is None
