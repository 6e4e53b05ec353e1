import collections
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from serve_app.policy.replica_choice import ReplicaLoad, choose_replica, prefix_key_of, rendezvous_replica


def load(replica_id: str, outstanding_tokens: int = 0, in_flight: int = 0, window: int = 8,
         dispatched_total: int = 0) -> ReplicaLoad:
    return ReplicaLoad(replica_id, outstanding_tokens=outstanding_tokens, in_flight=in_flight, window=window,
                       dispatched_total=dispatched_total)


def rng(seed: int = 0) -> random.Random:
    return random.Random(seed)


def test_no_replicas_returns_none():
    assert choose_replica([], rng()) is None


def test_all_replicas_full_returns_none():
    loads = [load("a", in_flight=8, window=8), load("b", in_flight=9, window=8)]
    assert choose_replica(loads, rng()) is None


def test_single_eligible_replica_is_chosen_without_randomness():
    loads = [load("a", in_flight=8, window=8), load("b", outstanding_tokens=10_000, in_flight=3), load("c", in_flight=8)]
    for seed in range(20):
        assert choose_replica(loads, rng(seed)) == "b"


def test_headroom_lets_a_full_replica_take_one_more():
    loads = [load("a", in_flight=8, window=8)]
    assert choose_replica(loads, rng(), headroom=0) is None
    assert choose_replica(loads, rng(), headroom=1) == "a"
    assert choose_replica([load("a", in_flight=9, window=8)], rng(), headroom=1) is None


def test_two_replicas_always_picks_fewer_outstanding_tokens():
    loads = [load("a", outstanding_tokens=500, dispatched_total=0), load("b", outstanding_tokens=400, dispatched_total=9)]
    assert {choose_replica(loads, rng(seed)) for seed in range(20)} == {"b"}


def test_near_ties_go_to_the_replica_sent_fewer_requests():
    # 500 vs 480 outstanding tokens is within 10%: load alone would always pick "b".
    loads = [load("a", outstanding_tokens=500, dispatched_total=3), load("b", outstanding_tokens=480, dispatched_total=4)]
    assert {choose_replica(loads, rng(seed)) for seed in range(20)} == {"a"}


def test_idle_replicas_take_turns_at_low_rates():
    """One request at a time, each finished before the next (1 request/s on fast replicas): every
    choice is a tie, and the replicas alternate rather than one taking everything."""
    sent = collections.Counter()
    generator = rng(7)
    for _ in range(100):
        loads = [load(replica_id, dispatched_total=sent[replica_id]) for replica_id in ("r1", "r2", "r3")]
        sent[choose_replica(loads, generator)] += 1
    assert max(sent.values()) - min(sent.values()) <= 2, sent


def test_ties_broken_by_in_flight_then_replica_id():
    by_in_flight = [load("a", 100, in_flight=3), load("b", 100, in_flight=2)]
    assert {choose_replica(by_in_flight, rng(seed)) for seed in range(10)} == {"b"}
    by_id = [load("z", 100, in_flight=2), load("m", 100, in_flight=2)]
    assert {choose_replica(by_id, rng(seed)) for seed in range(10)} == {"m"}


def test_power_of_two_never_picks_the_most_loaded_and_spreads_over_the_rest():
    loads = [load(f"r{i}", outstanding_tokens=100 * i) for i in range(4)]  # r3 is the busiest
    generator = rng(42)
    counts = collections.Counter(choose_replica(loads, generator) for _ in range(600))
    assert "r3" not in counts
    # r0 wins whenever sampled (3/6 pairs), r1 in 2/6, r2 in 1/6.
    assert counts["r0"] > counts["r1"] > counts["r2"] > 0
    assert counts == {"r0": 286, "r1": 204, "r2": 110}  # expected 300/200/100


def test_same_seed_same_choices():
    loads = [load(f"r{i}", outstanding_tokens=i % 3) for i in range(6)]
    first = [choose_replica(loads, random.Random(5)) for _ in range(3)]
    generator_a, generator_b = random.Random(9), random.Random(9)
    assert [choose_replica(loads, generator_a) for _ in range(50)] == [
        choose_replica(loads, generator_b) for _ in range(50)
    ]
    assert len(set(first)) == 1


def test_full_replica_is_never_chosen_even_if_least_loaded():
    loads = [load("idle-but-full", 0, in_flight=4, window=4), load("b", 900, in_flight=1), load("c", 800, in_flight=1)]
    assert {choose_replica(loads, rng(seed)) for seed in range(30)} == {"c"}


# --- prefix affinity ----------------------------------------------------------------------


def test_rendezvous_is_stable_and_independent_of_order():
    ids = ["a", "b", "c", "d"]
    for key in range(50):
        assert rendezvous_replica(key, ids) == rendezvous_replica(key, list(reversed(ids)))
    assert rendezvous_replica(1, []) is None


def test_rendezvous_removing_a_replica_only_moves_its_own_keys():
    ids = ["a", "b", "c", "d"]
    before = {key: rendezvous_replica(key, ids) for key in range(400)}
    after = {key: rendezvous_replica(key, ["a", "b", "d"]) for key in range(400)}
    moved = {key for key in before if before[key] != after[key]}
    assert moved == {key for key in before if before[key] == "c"}
    assert 60 < len(moved) < 140  # roughly a quarter of the keys lived on c


def test_rendezvous_is_stable_across_processes():
    # Python's hash() is salted per process; the rendezvous choice must not be.
    repo_root = str(Path(__file__).resolve().parents[2])
    code = (
        "from serve_app.policy.replica_choice import rendezvous_replica, prefix_key_of;"
        "print(prefix_key_of('hello world'), [rendezvous_replica(k, ['a', 'b', 'c']) for k in range(8)])"
    )
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": repo_root}
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        outputs.add(result.stdout)
    expected = f"{prefix_key_of('hello world')} {[rendezvous_replica(k, ['a', 'b', 'c']) for k in range(8)]}\n"
    assert outputs == {expected}


def preferred_and_other(prefix_key: int, ids: list[str]) -> tuple[str, list[str]]:
    preferred = rendezvous_replica(prefix_key, ids)
    return preferred, [rid for rid in ids if rid != preferred]


def test_affinity_picks_the_rendezvous_replica_even_if_slightly_busier():
    ids = ["a", "b", "c"]
    preferred, others = preferred_and_other(12345, ids)
    # mean = 1100 / 3 = 366.7; bound 1.25 x mean = 458.3 >= 450
    loads = [load(preferred, 450)] + [load(rid, 325) for rid in others]
    assert {choose_replica(loads, rng(seed), prefix_key=12345) for seed in range(20)} == {preferred}


def test_affinity_falls_back_when_preferred_exceeds_the_load_bound():
    ids = ["a", "b", "c"]
    preferred, others = preferred_and_other(12345, ids)
    # mean = 1150 / 3 = 383.3; bound = 479.2 < 500
    loads = [load(preferred, 500), load(others[0], 300), load(others[1], 350)]
    choices = {choose_replica(loads, rng(seed), prefix_key=12345) for seed in range(30)}
    assert preferred not in choices
    assert choices == set(others)  # p2c: the preferred replica loses every pair it is sampled in
    # A looser bound keeps affinity.
    assert choose_replica(loads, rng(), prefix_key=12345, affinity_load_bound=1.5) == preferred


def test_affinity_falls_back_when_preferred_has_no_window_room():
    ids = ["a", "b", "c"]
    preferred, others = preferred_and_other(777, ids)
    loads = [load(preferred, 0, in_flight=8, window=8), load(others[0], 100), load(others[1], 200)]
    assert {choose_replica(loads, rng(seed), prefix_key=777) for seed in range(20)} == {others[0]}
    # Reserved headroom makes the preferred replica eligible again.
    assert choose_replica(loads, rng(), prefix_key=777, headroom=1) == preferred


def test_affinity_with_all_idle_replicas_uses_the_preferred_one():
    loads = [load(rid) for rid in ["a", "b", "c", "d"]]
    for key in range(30):
        assert choose_replica(loads, rng(key), prefix_key=key) == rendezvous_replica(key, ["a", "b", "c", "d"])


def test_affinity_keeps_mapping_while_preferred_is_briefly_full():
    # The hash covers all replicas, so a full preferred replica does not hand its keys to a
    # fixed runner-up: the fallback is plain power-of-two, and the key returns once there is room.
    ids = ["a", "b", "c"]
    preferred, others = preferred_and_other(99, ids)
    runner_up = rendezvous_replica(99, others)
    least_loaded = next(rid for rid in others if rid != runner_up)
    full = [
        load(preferred, 300, in_flight=8),
        load(runner_up, 150),  # within the load bound (1.25 x 183.3), but busier
        load(least_loaded, 100),
    ]
    assert {choose_replica(full, rng(seed), prefix_key=99) for seed in range(20)} == {least_loaded}
    roomy = [load(rid, 0) for rid in ids]
    assert choose_replica(roomy, rng(), prefix_key=99) == preferred


# --- prefix keys --------------------------------------------------------------------------


def test_prefix_key_depends_only_on_the_first_block_of_tokens():
    shared = list(range(100, 116))
    assert prefix_key_of(shared + [1, 2, 3]) == prefix_key_of(shared + [9, 9])
    assert prefix_key_of(shared) != prefix_key_of([0] + shared[1:])
    assert prefix_key_of(shared, block_size=4) == prefix_key_of(shared[:4] + [7], block_size=4)
    assert prefix_key_of(shared, block_size=4) != prefix_key_of(shared, block_size=16)


def test_prefix_key_of_text_uses_block_size_times_chars_per_token():
    system_prompt = "You are a helpful assistant. Answer briefly, politely and in English."
    assert len(system_prompt) == 69  # longer than the 16 x 4 = 64 hashed characters
    assert prefix_key_of(system_prompt + " Q1") == prefix_key_of(system_prompt + " Q2")
    assert prefix_key_of("short a") != prefix_key_of("short b")
    assert prefix_key_of("abcdefgh", block_size=1, chars_per_token=4) == prefix_key_of("abcdXXXX", block_size=1)


def test_prefix_key_tokens_and_text_do_not_collide():
    assert prefix_key_of([1, 2, 3]) != prefix_key_of("1,2,3")


def test_prefix_key_accepts_tuples_and_is_a_64_bit_int():
    key = prefix_key_of((5, 6, 7))
    assert key == prefix_key_of([5, 6, 7])
    assert 0 <= key < 2**64


def test_prefix_key_rejects_empty_block():
    with pytest.raises(ValueError):
        prefix_key_of([1, 2], block_size=0)
