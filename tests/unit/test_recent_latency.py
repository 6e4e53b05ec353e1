import pytest

from serve_app.policy.recent_latency import RecentLatencies


def test_only_samples_within_the_horizon_count():
    recent = RecentLatencies(horizon_s=10)
    recent.add("high", now=0.0, seconds=2.0)
    recent.add("high", now=5.0, seconds=0.1)
    recent.add("low", now=5.0, seconds=7.0)
    # serve_app.statistics.percentile of [0.1, 2.0]: linear between the two samples.
    assert recent.summary(now=9.0)["high"] == {"n": 2, "p50_s": pytest.approx(0.1 + 0.5 * 1.9),
                                               "p99_s": pytest.approx(0.1 + 0.99 * 1.9), "max_s": 2.0}
    later = recent.summary(now=12.0)
    assert later["high"] == {"n": 1, "p50_s": 0.1, "p99_s": 0.1, "max_s": 0.1}
    assert later["low"]["n"] == 1
    gone = recent.summary(now=20.0)
    assert gone["high"] == {"n": 0, "p50_s": None, "p99_s": None, "max_s": None}


def test_sample_count_is_bounded():
    recent = RecentLatencies(horizon_s=100, max_samples=3)
    for i in range(10):
        recent.add("c", now=float(i), seconds=float(i))
    # [7, 8, 9]: the p99 sits 0.98 of the way from the middle sample (rank 1.98 of 0..2) to the last.
    assert recent.summary(now=10.0)["c"] == {"n": 3, "p50_s": 8.0, "p99_s": pytest.approx(8.0 + 0.98), "max_s": 9.0}


def test_rejects_empty_horizon():
    with pytest.raises(ValueError):
        RecentLatencies(horizon_s=0)


def test_a_summary_can_cover_less_than_the_horizon():
    recent = RecentLatencies(horizon_s=120)
    recent.add("total", now=0.0, seconds=9.0)  # an earlier load point's
    for t in range(50, 60):
        recent.add("total", now=float(t), seconds=0.01 * (t - 49))
    point = recent.summary(now=60.0, within_s=15)["total"]
    assert point["n"] == 10 and point["max_s"] == 0.1
    assert recent.summary(now=60.0)["total"]["n"] == 11 and recent.summary(now=60.0)["total"]["max_s"] == 9.0
