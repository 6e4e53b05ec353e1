"""RouterCore with cache-aware routing (precise and approximate prefix indexes), on a fake clock."""
from __future__ import annotations

import random

import pytest

from serve_app.config import load_config
from serve_app.policy.api_keys import Caller
from serve_app.policy.prefix_blocks import block_keys
from serve_app.policy.prefix_cache_index import AllCleared, BlocksRemoved, BlocksStored
from serve_app.policy.prefix_routing import IN_FLIGHT_TTL_S
from serve_app.policy.priority_classes import PriorityClass, PriorityClasses
from serve_app.policy.replica_choice import rendezvous_replica
from serve_app.policy.router_core import RouterCore, RouterPolicy

CLASSES = PriorityClasses([
    PriorityClass("interactive", 0, ttft_slo_s=0.5, tpot_slo_s=0.1, queue_deadline_s=2.0),
    PriorityClass("batch", 1, ttft_slo_s=30.0, tpot_slo_s=1.0, queue_deadline_s=10.0),
])
ANYONE = Caller("anyone", "interactive")
BLOCK = 16
SHARED = list(range(1000, 1000 + 4 * BLOCK))  # a four-block system prompt
REPLICAS = {"r1": 100, "r2": 100, "r3": 100}


def make_core(routing: str, **policy) -> RouterCore:
    defaults = {"initial_window": 16, "aging_interval_s": None, "initial_service_rate_rps": 1000.0,
                "headroom_fraction": 0.0, "window_tuning": {"slow_start": False},
                "admission_warmup_completions": 0, "routing": routing}
    core = RouterCore(CLASSES, RouterPolicy(**{**defaults, **policy}), random.Random(0))
    core.set_replicas(REPLICAS)
    for replica_id in REPLICAS:
        core.set_cache_capacity(replica_id, 1000, BLOCK)
    return core


def prompt(suffix: int, shared: list[int] = SHARED) -> list[int]:
    return shared + [suffix] * (2 * BLOCK)


def send(core: RouterCore, request_id: str, tokens: list[int], now: float, class_name: str = "interactive",
         cost: int = 200) -> str:
    """Admit one request and dispatch it; the replica it went to."""
    assert core.admit(request_id, class_name, ANYONE, cost, now, prefix_blocks=block_keys(tokens, BLOCK),
                      prompt_tokens=len(tokens)) is None
    (dispatch,) = core.take_dispatches(now)
    assert dispatch.request_id == request_id
    return dispatch.replica_id


def holds(blocks: int, tokens: list[int] = SHARED) -> BlocksStored:
    return BlocksStored([f"e{i}" for i in range(blocks)], None, tokens[:blocks * BLOCK], BLOCK)


def test_a_shared_prefix_stream_lands_on_the_replica_holding_its_prefix():
    core = make_core("precise_prefix")
    core.apply_cache_events("r2", [holds(4)])
    for i in range(6):
        assert send(core, f"q{i}", prompt(i), now=float(i)) == "r2"
        core.finish(f"q{i}", float(i) + 0.5, ok=True)


def test_load_wins_when_the_holder_is_overloaded():
    core = make_core("precise_prefix")
    core.apply_cache_events("r2", [holds(4)])
    # Nothing finishes: r2 fills up with the shared prefix until it passes 1.25 x the mean load.
    chosen = [send(core, f"q{i}", prompt(i), now=0.01 * i) for i in range(9)]
    assert chosen[0] == "r2"
    assert {"r1", "r3"} & set(chosen)
    outstanding = {rid: entry["outstanding_tokens"] for rid, entry in core.stats()["replicas"].items()}
    mean = sum(outstanding.values()) / len(outstanding)
    assert outstanding["r2"] <= 1.25 * mean + 200  # at most one request past the bound


def test_removed_or_cleared_blocks_stop_attracting():
    for events in ([BlocksRemoved(["e0"])], [AllCleared()]):
        core, baseline = make_core("precise_prefix"), make_core("least_outstanding_tokens")
        core.apply_cache_events("r2", [holds(4)])
        core.apply_cache_events("r2", events)
        # Spaced beyond the in-flight overlay's TTL, so only the events could attract them.
        spacing = IN_FLIGHT_TTL_S + 1
        for i in range(20):
            tokens = prompt(i)
            assert send(core, f"q{i}", tokens, spacing * i) == send(baseline, f"q{i}", tokens, spacing * i)
        assert core.stats()["classes"]["interactive"]["predicted_prefix_hit_rate"] == 0.0


def test_a_burst_sharing_a_new_prefix_follows_its_first_request_before_any_event():
    """No replica's events show the prefix yet (they come after the first prefill): the requests just
    sent count as cached where they went, so a burst gathers on one replica (within the load bound)."""
    core, baseline = make_core("precise_prefix"), make_core("least_outstanding_tokens")
    for i in range(30):  # background: every replica busy with prompts of their own
        unrelated = [5000 + i * 100 + j for j in range(3 * BLOCK)]
        assert send(core, f"bg{i}", unrelated, 0.0) == send(baseline, f"bg{i}", unrelated, 0.0)
    first = send(core, "q0", prompt(0), now=0.0)
    assert [send(core, f"q{i}", prompt(i), now=0.01 * i) for i in range(1, 4)] == [first] * 3
    assert core.stats()["classes"]["interactive"]["predicted_prefix_hit_rate"] > 0
    # Unconfirmed by events past the TTL, no longer believed: the next one is booked with no predicted hit.
    booked_tokens = 30 * 3 * BLOCK + 4 * len(prompt(0))
    rate = core.stats()["classes"]["interactive"]["predicted_prefix_hit_rate"]
    send(core, "q4", prompt(4), now=IN_FLIGHT_TTL_S + 1)
    after = core.stats()["classes"]["interactive"]["predicted_prefix_hit_rate"]
    assert after == pytest.approx(rate * booked_tokens / (booked_tokens + len(prompt(4))))


@pytest.mark.parametrize("routing", ["precise_prefix", "approximate_prefix"])
def test_without_shared_prefixes_the_decisions_are_the_load_only_ones(routing):
    core, baseline = make_core(routing), make_core("least_outstanding_tokens")
    for i in range(60):
        tokens = [i * 7 + j for j in range(3 * BLOCK)]  # every prompt its own
        cls = "batch" if i % 3 else "interactive"
        assert send(core, f"q{i}", tokens, 0.1 * i, cls) == send(baseline, f"q{i}", tokens, 0.1 * i, cls)
        if i % 2:
            core.finish(f"q{i - 1}", 0.1 * i, ok=True)
            baseline.finish(f"q{i - 1}", 0.1 * i, ok=True)


def test_requests_without_block_keys_route_as_load_only():
    core, baseline = make_core("precise_prefix"), make_core("least_outstanding_tokens")
    core.apply_cache_events("r2", [holds(4)])
    for i in range(20):
        for c in (core, baseline):
            assert c.admit(f"q{i}", "interactive", ANYONE, 100, 0.0) is None
        assert core.take_dispatches(0.0) == baseline.take_dispatches(0.0)


def test_approximate_mode_follows_where_a_prefix_was_sent_until_the_ttl():
    core = make_core("approximate_prefix", approximate_cache_ttl_s=30.0)
    first = send(core, "q0", prompt(0), now=0.0)
    core.finish("q0", 1.0, ok=True)
    for i in range(1, 5):
        assert send(core, f"q{i}", prompt(i), now=float(i)) == first
        core.finish(f"q{i}", float(i) + 0.5, ok=True)
    hits = core.stats()["replicas"][first]["predicted_prefix_hit_rate"]
    assert hits == pytest.approx(4 * 4 / (5 * 6))  # four of six blocks cached, on four of five requests
    # Past the TTL of the last send (t=4) the record is gone: the next one is predicted no hit.
    send(core, "late", prompt(9), now=40.0)
    assert core.stats()["classes"]["interactive"]["predicted_prefix_hit_rate"] == pytest.approx(4 * 64 / (6 * 96))
    assert core.stats()["prefix_index"] == {"indexed_blocks": 6}  # the late prompt's blocks only


def test_predicted_hit_rate_per_class_and_replica():
    core = make_core("precise_prefix")
    core.apply_cache_events("r2", [holds(4)])
    send(core, "a", prompt(1), 0.0, "interactive")  # 64 of 96 tokens cached
    core.finish("a", 0.1, ok=True)
    went = send(core, "b", prompt(2, shared=list(range(64))), 0.2, "batch")  # 0 of 96
    stats = core.stats()
    assert stats["classes"]["interactive"]["predicted_prefix_hit_rate"] == pytest.approx(64 / 96)
    assert stats["classes"]["batch"]["predicted_prefix_hit_rate"] == 0.0
    assert stats["replicas"]["r2"]["predicted_prefix_hit_rate"] == pytest.approx(64 / 96 if went != "r2" else 64 / 192)
    assert stats["replicas"][went]["predicted_prefix_hit_rate"] is not None
    assert stats["prefix_index"] == {"indexed_blocks": 4, "unkeyed_blocks": 0}


def test_replicas_that_leave_are_dropped_from_the_index():
    core = make_core("precise_prefix")
    core.apply_cache_events("r1", [holds(4)])
    core.apply_cache_events("r2", [holds(2)])
    core.set_replicas({"r2": 100, "r3": 100})
    assert core.stats()["prefix_index"]["indexed_blocks"] == 2
    core.replica_failed("r2")
    core.apply_cache_events("r2", [holds(4)])  # late events of a dead replica are not indexed
    assert core.stats()["prefix_index"]["indexed_blocks"] == 0


def test_load_only_routing_keeps_no_index():
    core = make_core("least_outstanding_tokens")
    core.apply_cache_events("r2", [holds(4)])
    send(core, "a", prompt(1), 0.0)
    stats = core.stats()
    assert "prefix_index" not in stats
    assert "predicted_prefix_hit_rate" not in stats["classes"]["interactive"]


def test_old_prefix_affinity_true_loads_as_first_block_affinity(tmp_path):
    assert RouterPolicy(prefix_affinity=True).routing == "first_block_affinity"
    assert RouterPolicy(prefix_affinity=False).routing == "least_outstanding_tokens"
    with pytest.raises(ValueError, match="prefix_affinity"):
        RouterPolicy(prefix_affinity=True, routing="precise_prefix")
    path = tmp_path / "config.yaml"
    path.write_text("router:\n  prefix_affinity: true\n  affinity_load_bound: 1.5\n")
    config = load_config(path)
    assert config.router.routing == "first_block_affinity" and config.router.affinity_load_bound == 1.5
    assert "prefix_affinity" not in config.router.model_dump()
    # And it routes as before: a prompt's first block picks its rendezvous replica.
    core = make_core("first_block_affinity")
    for key in range(5):
        assert core.admit(f"q{key}", "interactive", ANYONE, 10, 0.0, prefix_key=key) is None
        (dispatch,) = core.take_dispatches(0.0)
        assert dispatch.replica_id == rendezvous_replica(key, list(REPLICAS))
        core.finish(f"q{key}", 0.1, ok=True)
