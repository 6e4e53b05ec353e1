"""The LLM autoscaling decision (autoscaling/llm_policy.py), driven by a fake clock."""
from __future__ import annotations

import math

import pytest

from autoscaling.llm_policy import LLMPolicySettings, PolicyState, Signals, decide_replicas, load_replicas

SETTINGS = LLMPolicySettings(min_replicas=1, max_replicas=4, target_ongoing_requests=4, upscale_delay_s=5,
                             downscale_delay_s=60, top_classes=("interactive",), queue_depth_per_replica=1,
                             slo_attainment_min=0.9, slo_min_samples=5, kv_cache_high=0.9, kv_cache_low=0.6)


def signals(replicas=1, target=None, ongoing=2.0, kv=0.3, queue=None, attainment=None, samples=20) -> Signals:
    ids = [f"r{i}" for i in range(replicas)]
    attainment = attainment or {}
    return Signals(running_replicas=replicas, target_replicas=replicas if target is None else target,
                   ongoing_requests={i: ongoing for i in ids}, kv_cache_usage={i: kv for i in ids},
                   queue_depth=queue or {}, slo_attainment=attainment,
                   slo_samples={name: samples for name in attainment})


def run_for(sig: Signals, seconds: float, start: float = 0.0, state: PolicyState | None = None, step: float = 1.0,
            settings: LLMPolicySettings = SETTINGS):
    """Decide every `step` seconds with the same signals; the decisions and the final state."""
    state = state or PolicyState()
    decisions = []
    t = start
    while t <= start + seconds:
        replicas, state = decide_replicas(sig, settings, state, now=t)
        decisions.append((t, replicas))
        t += step
    return decisions, state


def first_change(decisions, current):
    return next(((t, r) for t, r in decisions if r != current), None)


def test_calm_load_within_target_keeps_the_count():
    decisions, _ = run_for(signals(replicas=2, ongoing=3.0, kv=0.7), 120)
    assert {r for _, r in decisions} == {2}  # kv 0.7 is not calm enough to shed a replica


@pytest.mark.parametrize("pressure", [
    {"queue": {"interactive": 3}},  # queued in the router while each replica's window is full
    {"attainment": {"interactive": 0.5}},  # SLO misses
    {"kv": 0.95},  # KV cache nearly full
])
def test_pressure_scales_up_after_the_upscale_delay_even_when_ongoing_looks_fine(pressure):
    sig = signals(replicas=1, ongoing=2.0, **pressure)
    # Ray Serve's default policy sees only ongoing requests: 2 / 4 per replica -> holds at 1.
    assert math.ceil(sum(sig.ongoing_requests.values()) / SETTINGS.target_ongoing_requests) == 1
    decisions, _ = run_for(sig, 20)
    assert first_change(decisions, 1) == (5.0, 2)


def test_lower_class_queueing_and_too_few_slo_samples_do_not_scale_up():
    sig = signals(replicas=1, queue={"batch": 50}, attainment={"interactive": 0.0}, samples=2)
    decisions, _ = run_for(sig, 30)
    assert first_change(decisions, 1) is None


def test_pressure_that_stops_before_the_delay_does_nothing():
    state = PolicyState()
    for t in range(4):
        replicas, state = decide_replicas(signals(queue={"interactive": 3}), SETTINGS, state, float(t))
        assert replicas == 1
    replicas, state = decide_replicas(signals(), SETTINGS, state, 4.0)
    replicas, state = decide_replicas(signals(queue={"interactive": 3}), SETTINGS, state, 5.0)
    assert replicas == 1 and state.pressure_since == 5.0


def test_no_more_replicas_while_one_is_starting_unless_the_load_needs_them():
    starting = signals(replicas=1, target=2, queue={"interactive": 3})
    decisions, _ = run_for(starting, 60)
    assert {r for _, r in decisions} == {2}
    heavy = signals(replicas=1, target=2, ongoing=14.0)  # 14 in flight / 4 per replica -> 4
    decisions, _ = run_for(heavy, 10)
    assert first_change(decisions, 2) == (5.0, 4)


def test_load_alone_scales_to_its_count_and_max_bounds_it():
    decisions, _ = run_for(signals(replicas=1, ongoing=30.0), 10)
    assert first_change(decisions, 1) == (5.0, 4)  # ceil(30 / 4) = 8, capped at max_replicas 4


def test_scale_down_needs_calm_for_the_whole_delay_one_replica_at_a_time():
    calm = signals(replicas=3, ongoing=0.5, kv=0.1)
    decisions, state = run_for(calm, 59)
    assert {r for _, r in decisions} == {3}
    replicas, state = decide_replicas(calm, SETTINGS, state, 60.0)
    assert replicas == 2
    # The next step waits a full delay again.
    calm2 = signals(replicas=2, ongoing=0.5, kv=0.1)
    decisions, _ = run_for(calm2, 70, start=61.0, state=state)
    assert first_change(decisions, 2) == (121.0, 1)


def test_a_blip_of_pressure_restarts_the_calm_clock():
    calm = signals(replicas=2, ongoing=0.5, kv=0.1)
    _, state = run_for(calm, 50)
    _, state = decide_replicas(signals(replicas=2, ongoing=0.5, queue={"interactive": 1}), SETTINGS, state, 51.0)
    decisions, _ = run_for(calm, 70, start=52.0, state=state)
    assert first_change(decisions, 2) == (112.0, 1)


def test_never_below_min_replicas():
    settings = LLMPolicySettings(**{**SETTINGS.__dict__, "min_replicas": 2})
    decisions, _ = run_for(signals(replicas=2, ongoing=0.0, kv=0.0), 300, settings=settings)
    assert {r for _, r in decisions} == {2}


def test_state_round_trips_through_a_dict():
    state = PolicyState(pressure_since=3.0, calm_since=None, last_reasons=("x",))
    assert PolicyState.from_dict(state.as_dict()) == state


def test_load_counts_top_class_queue_but_not_lower_classes():
    sig = signals(replicas=1, ongoing=2.0, queue={"interactive": 7, "batch": 100})
    assert load_replicas(sig, SETTINGS) == 3  # ceil((2 + 7) / 4)
