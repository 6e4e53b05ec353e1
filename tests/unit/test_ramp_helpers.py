"""The ramp driver's pure helpers (autoscaling/ramp.py): when a replica count has held."""
from autoscaling.ramp import Outcome, RampResult, held


def result(samples):
    return RampResult(replicas=list(samples))


def test_held_needs_the_whole_span_at_the_count_with_no_other_replica():
    assert not held(result([(0, 2, 2), (5, 2, 2)]), 2, 10)  # not long enough yet
    assert held(result([(0, 1, 1), (5, 2, 2), (16, 2, 2)]), 2, 10)
    assert not held(result([(0, 2, 2), (8, 1, 2), (16, 2, 2)]), 2, 10)
    assert not held(result([(0, 1, 2), (16, 1, 2)]), 1, 10)  # one still draining


def test_counts_and_json():
    r = RampResult(outcomes=[Outcome("high", 0, 1, 200, "served"), Outcome("high", 0, 1, 429, "refused")])
    assert (r.count("served"), r.count("refused"), r.count("lost")) == (1, 1, 0)
    assert r.to_json()["served"] == 1
