"""Cache-aware replica choice: cached prefix against load, bounded against hot spots, load-only without hits."""
import random

import pytest

from serve_app.policy.cache_aware_choice import choose_cache_aware
from serve_app.policy.replica_choice import ReplicaLoad, choose_replica

WEIGHTS = {"cache_weight": 3.0, "load_weight": 2.0, "affinity_load_bound": 1.25}


def load(replica_id: str, outstanding_tokens: int = 0, in_flight: int = 0, dispatched_total: int = 0) -> ReplicaLoad:
    return ReplicaLoad(replica_id, outstanding_tokens=outstanding_tokens, in_flight=in_flight, window=8,
                       dispatched_total=dispatched_total)


def test_no_candidates_is_none():
    assert choose_cache_aware([], {}, 100, random.Random(0), **WEIGHTS) is None


def test_the_replica_holding_the_prefix_wins_at_similar_load():
    loads = [load("a", 1000, 2), load("b", 1100, 2), load("c", 900, 2)]
    for seed in range(20):
        assert choose_cache_aware(loads, {"b": 800}, 1000, random.Random(seed), **WEIGHTS) == "b"


def test_the_longer_cached_prefix_wins_between_holders():
    loads = [load("a", 1000, 2), load("b", 1000, 2)]
    assert choose_cache_aware(loads, {"a": 200, "b": 600}, 1000, random.Random(0), **WEIGHTS) == "b"


def test_load_wins_when_the_holder_is_past_the_bound():
    # mean 1000 x 1.25 = 1250 < 1400: the holder is not chosen for its cache however much it holds.
    loads = [load("a", 1400, 5), load("b", 800, 2), load("c", 800, 2)]
    for seed in range(20):
        assert choose_cache_aware(loads, {"a": 1000}, 1000, random.Random(seed), **WEIGHTS) in {"b", "c"}
    # Under the bound (mean 900, limit 1125 >= 1100) the same hit wins.
    loads[0] = load("a", 1100, 5)
    assert choose_cache_aware(loads, {"a": 1000}, 1000, random.Random(0), **WEIGHTS) == "a"


def test_a_small_hit_on_a_busy_replica_loses_to_an_idle_one():
    loads = [load("a", 1200, 4), load("b", 0, 0), load("c", 1200, 4)]
    limit_free = {**WEIGHTS, "affinity_load_bound": 100.0}  # the scores alone decide
    # a: 3 x 0.1 - 2 x 1.0 = -1.7; b: 0: b.
    assert choose_cache_aware(loads, {"a": 100}, 1000, random.Random(0), **limit_free) == "b"


def test_equal_scores_go_to_the_replica_sent_fewer_requests():
    loads = [load("a", 0, 0, dispatched_total=5), load("b", 0, 0, dispatched_total=3), load("c", 0, 0)]
    # c has no cache and the same zero load, but the holders a and b score 3 x 0.5 above it.
    assert choose_cache_aware(loads, {"a": 50, "b": 50}, 100, random.Random(0), **WEIGHTS) == "b"


@pytest.mark.parametrize("cached", [{}, {"a": 0, "b": 0}, {"gone": 500}])
def test_without_a_hit_the_choice_is_the_load_only_one_draw_for_draw(cached):
    loads = [load(f"r{i}", outstanding_tokens=(i * 37) % 500, in_flight=i % 4, dispatched_total=i) for i in range(6)]
    ours, baseline = random.Random(7), random.Random(7)
    for _ in range(200):
        assert choose_cache_aware(loads, cached, 1000, ours, **WEIGHTS) == choose_replica(loads, baseline)


def test_a_hit_only_on_a_replica_past_the_bound_is_load_only_too():
    loads = [load("a", 5000, 5), load("b", 100, 1), load("c", 200, 1)]
    ours, baseline = random.Random(3), random.Random(3)
    for _ in range(50):
        assert choose_cache_aware(loads, {"a": 900}, 1000, ours, **WEIGHTS) == choose_replica(loads, baseline)
