"""The one percentile / TPOT / SLO definition (serve_app.statistics)."""
import pytest

from serve_app.statistics import attainment, meets_slo, percentile, percentile_ceil, summary, tpot_s


def test_percentile_interpolates_between_closest_ranks_like_vllm_bench():
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0


def test_percentile_ceil_rounds_counts_up_but_not_exact_values():
    assert percentile_ceil([100, 200], 95) == 195
    assert percentile_ceil([10, 11], 50) == 11
    assert percentile_ceil([7, 7, 7], 95) == 7
    assert percentile_ceil([], 95) is None


def test_summary_names_the_reported_percentiles():
    stats = summary([1.0, 2.0, 3.0])
    assert stats == {"mean": 2.0, "p50": 2.0, "p90": pytest.approx(2.8), "p99": pytest.approx(2.98)}
    assert summary([]) == {"mean": None, "p50": None, "p90": None, "p99": None}


def test_tpot_excludes_the_first_token():
    assert tpot_s(1.1, 0.1, 11) == pytest.approx(0.1)
    assert tpot_s(1.0, 0.2, 1) is None
    assert tpot_s(None, 0.2, 5) is None


def test_meets_slo_judges_single_token_requests_on_ttft_alone():
    assert meets_slo(0.1, None, 0.5, 0.05)
    assert not meets_slo(None, None, 0.5, 0.05)
    assert not meets_slo(0.6, 0.01, 0.5, 0.05)
    assert not meets_slo(0.1, 0.06, 0.5, 0.05)
    assert meets_slo(0.1, 0.06, 0.5, None)
    assert attainment([True, False, True, True]) == 0.75 and attainment([]) is None
