"""Capacity refusals as an autoscaling signal: the policy's decision (autoscaling/llm_policy.py), the
router counters it comes from, the controller's rates (fake clock) and the trip through Serve's
custom metrics (serve_app/telemetry/autoscaling_signals.py, autoscaling/signals.py), and a simulated
cluster that scales on it."""
from __future__ import annotations

import asyncio
import random

from autoscaling.llm_policy import LLMPolicySettings, PolicyState, Signals, decide_replicas, load_replicas
from autoscaling.loadtest.arrivals import step
from autoscaling.loadtest.lengths import Fixed
from autoscaling.signals import signals_from_metrics
from autoscaling.simulator.autoscalers import LLMPolicyAutoscaler
from autoscaling.simulator.cluster import Cluster, ClusterConfig
from autoscaling.simulator.fit import PROFILE
from autoscaling.simulator.replica import EngineConfig
from autoscaling.simulator.step_model import StepModel
from autoscaling.simulator.workload import ClassLoad, generate
from serve_app.deployments.controller import Controller
from serve_app.policy.api_keys import Caller
from serve_app.policy.priority_classes import PriorityClass, PriorityClasses
from serve_app.policy.router_core import RouterCore, RouterPolicy
from serve_app.telemetry.autoscaling_signals import CounterRates, capacity_counts, replica_stats

SETTINGS = LLMPolicySettings(min_replicas=1, max_replicas=20, target_ongoing_requests=4, upscale_delay_s=5,
                             downscale_delay_s=60, top_classes=("interactive",))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def at_window_cap(replicas: int = 2, target: int | None = None, arrivals: float = 10.0, refused: float = 0.0,
                  cls: str = "batch") -> Signals:
    """Every replica holds its window cap of 3 requests (below the target of 4); nothing queued."""
    ids = [f"r{i}" for i in range(replicas)]
    return Signals(running_replicas=replicas, target_replicas=replicas if target is None else target,
                   ongoing_requests={i: 3.0 for i in ids}, kv_cache_usage={i: 0.3 for i in ids},
                   arrival_rate_rps={cls: arrivals}, refused_rate_rps={cls: refused} if refused else {})


def decisions(sig: Signals, seconds: int, state: PolicyState | None = None, settings=SETTINGS):
    state = state or PolicyState()
    out = []
    for t in range(seconds + 1):
        replicas, state = decide_replicas(sig, settings, state, now=float(t))
        out.append(replicas)
    return out, state


def test_refusals_scale_up_while_in_flight_sits_at_the_window_cap():
    sig = at_window_cap(replicas=2, arrivals=10.0, refused=6.0)  # 60% turned away at the door
    # Ongoing requests alone (what Ray's default policy sees) ask for no more: ceil(6 / 4) = 2.
    assert load_replicas(at_window_cap(replicas=2, arrivals=10.0), SETTINGS) == 2
    out, state = decisions(sig, 10)
    # 2 replicas serve 40% of the demand: 2 / 0.4 = 5, after the upscale delay.
    assert out[:5] == [2] * 5 and out[5] == 5
    assert any("refused" in reason for reason in state.last_reasons)


def test_refusal_scale_is_bounded_per_decision_and_does_not_compound_while_starting():
    sig = at_window_cap(replicas=2, arrivals=10.0, refused=10.0)  # everything refused
    assert load_replicas(sig, SETTINGS) == 2 * SETTINGS.refusal_scale_max
    # Replicas asked for are starting and the same refusals go on: the count holds.
    starting = at_window_cap(replicas=2, target=8, arrivals=10.0, refused=10.0)
    out, _ = decisions(starting, 30)
    assert set(out) == {8}


def test_refusals_below_the_share_limit_neither_scale_up_nor_block_scale_down():
    sig = at_window_cap(replicas=2, arrivals=1000.0, refused=5.0)  # 0.5%, under refused_share_max 1%
    out, _ = decisions(sig, 30)
    assert set(out) == {2}
    idle = Signals(running_replicas=3, target_replicas=3, ongoing_requests={"a": 0.5, "b": 0.5, "c": 0.5},
                   arrival_rate_rps={"batch": 1000.0}, refused_rate_rps={"batch": 5.0})
    out, _ = decisions(idle, 61)
    assert out[60] == 2  # calm for the whole downscale delay despite the 0.5%
    noisy = Signals(running_replicas=3, target_replicas=3, ongoing_requests={"a": 0.5, "b": 0.5, "c": 0.5},
                    arrival_rate_rps={"batch": 100.0}, refused_rate_rps={"batch": 5.0})  # 5%: not calm
    out, _ = decisions(noisy, 61)
    assert min(out) == 3 and max(out) == 4  # no scale-down; 3 replicas serve 95%: ceil(3 / 0.95) = 4


def _counts(core: RouterCore) -> dict[str, tuple[int, int]]:
    return {name: capacity_counts(c) for name, c in core.stats()["classes"].items()}


def test_rate_limit_refusals_are_not_capacity_but_overload_queue_full_shed_and_expiry_are():
    classes = PriorityClasses([PriorityClass("interactive", 0, 0.5, 0.1, 2.0),
                               PriorityClass("batch", 1, 30.0, 1.0, 20.0)])
    policy = RouterPolicy(max_queue_size=2, admission_warmup_completions=0, initial_service_rate_rps=100.0)
    core = RouterCore(classes, policy, random.Random(0))  # no replicas: everything admitted stays queued
    limited, anyone = Caller("limited", "interactive", rate_limit_rps=1.0), Caller("anyone", "interactive")
    assert core.admit("a", "interactive", limited, 10, 0.0) is None
    assert core.admit("b", "interactive", limited, 10, 0.0).code == "rate_limit_exceeded"
    assert core.admit("c", "batch", anyone, 10, 0.0) is None
    assert core.admit("d", "interactive", anyone, 10, 0.0) is None  # the full queue sheds "c"
    assert core.admit("e", "batch", anyone, 10, 0.0).code == "queue_full"
    # (arrivals, refused): the rate-limited "b" is neither; shed "c" and queue-full "e" are refused.
    assert _counts(core) == {"interactive": (2, 0), "batch": (2, 2)}
    core.expire(100.0)  # "a" and "d" waited past the 2 s deadline: refused, already counted as arrivals
    assert _counts(core) == {"interactive": (2, 2), "batch": (2, 2)}
    slow = RouterCore(classes, RouterPolicy(admission_warmup_completions=0, initial_service_rate_rps=0.1),
                      random.Random(0))
    assert slow.admit("x", "interactive", anyone, 10, 0.0).code == "overloaded"  # predicted wait 10 s > 2 s
    assert _counts(slow)["interactive"] == (1, 1)


def test_counter_rates_over_the_window_with_a_fake_clock():
    rates = CounterRates(window_s=10.0)
    assert rates.rates(0.0, stale_s=5.0) == {}
    for t in range(0, 21):
        rates.observe({"batch": (10 * t, 4 * t)}, float(t))
    assert rates.rates(20.0, stale_s=5.0) == {"batch": (10.0, 4.0)}
    assert rates.rates(26.0, stale_s=5.0) == {}  # the router stopped reporting
    rates.observe({"batch": (3, 1)}, 21.0)  # a restarted router counts from zero again
    # The window now starts at t=11 (110, 44): the restarted counts are all since then, over 10 s.
    assert rates.rates(21.0, stale_s=5.0) == {"batch": (0.3, 0.1)}


def test_controller_sums_every_ingress_replicas_router_counters_into_rates_for_the_replicas():
    clock = FakeClock()
    controller = Controller({}, clock=clock)
    for t in range(0, 31, 1):
        clock.now = float(t)
        asyncio.run(controller.lease_windows("ingress-a", [0, 0, 0], {"batch": 2},
                                             {"batch": (20 * t, 5 * t), "interactive": (2 * t, 0)}))
        asyncio.run(controller.lease_windows("ingress-b", [0, 0, 0], {"batch": 1}, {"batch": (10 * t, 0)}))
    rates = asyncio.run(controller.router_capacity_rates())
    assert rates == {"batch": (30.0, 5.0), "interactive": (2.0, 0.0)}
    assert asyncio.run(controller.router_queue_depths()) == {"batch": 3}
    clock.now = 60.0
    assert asyncio.run(controller.router_capacity_rates()) == {}


def test_rates_travel_through_serve_metrics_to_the_policy_signals():
    stats = replica_stats(3, 0.4, {"interactive": 0.0}, {}, {"batch": (10.0, 6.0)})
    other = replica_stats(3, 0.4, {"interactive": 0.0}, {}, {"batch": (9.0, 5.0)})  # a slightly older read
    metrics: dict = {}
    for rid, per in (("r0", stats), ("r1", other), ("gone", stats)):
        for name, value in per.items():
            metrics.setdefault(name, {})[rid] = value
    sig = signals_from_metrics(metrics, ["r0", "r1"], target_replicas=2)
    assert sig.arrival_rate_rps == {"batch": 10.0} and sig.refused_rate_rps == {"batch": 6.0}
    assert sig.ongoing_requests == {"r0": 3.0, "r1": 3.0} and sig.kv_cache_usage == {"r0": 0.4, "r1": 0.4}
    assert sig.queue_depth == {"interactive": 0.0} and sig.running_replicas == 2
    out, _ = decisions(sig, 5)
    assert out[-1] == 5  # as in the first test: 2 replicas serving 40%


def _overload_run(settings: LLMPolicySettings):
    """One replica whose window caps in-flight at 8; 60 req/s of long batch requests, far over its capacity."""
    classes = PriorityClasses([PriorityClass("interactive", 0, 0.5, 0.1, 2.0),
                               PriorityClass("batch", 1, 30.0, 1.0, 5.0)])
    workload = {"batch": ClassLoad(1.0, Fixed(256), Fixed(256))}
    requests = list(generate(step([(10, 2.0), (110, 60.0)]), workload, seed=3))
    config = ClusterConfig(classes, engine=EngineConfig(max_num_seqs=8), initial_replicas=1, startup_delay_s=20,
                           control_period_s=1.0, look_back_s=10)
    autoscaler = LLMPolicyAutoscaler(settings)
    seen = []

    def observing(signals):
        seen.append(signals)
        return autoscaler(signals)

    result = Cluster(config, StepModel.load(PROFILE), observing).run(requests, until_s=150)
    return result, seen


def test_simulated_llm_policy_scales_up_on_refusals_while_in_flight_is_at_the_window_cap():
    # target_ongoing_requests above the window cap and a batch-only load (not a top class): neither
    # ongoing requests, the queue nor the SLO can ask for a replica -- only the refusals can.
    settings = LLMPolicySettings(min_replicas=1, max_replicas=6, target_ongoing_requests=16, upscale_delay_s=5,
                                 downscale_delay_s=600, top_classes=("interactive",))
    result, seen = _overload_run(settings)
    overloaded = [s for s in seen if 20 <= s.now <= 40]
    assert all(sum(s.ongoing_requests.values()) <= 8 * s.running_replicas for s in overloaded)
    assert any(s.class_refused_rate_rps.get("batch", 0) > 0 for s in overloaded)
    assert max(row["target"] for row in result.timeline) > 1
    assert max(row["running"] for row in result.timeline) > 1
    # The same run without the refusal signal (a share limit no load can exceed) stays at one replica.
    blind, _ = _overload_run(LLMPolicySettings(**{**settings.__dict__, "refused_share_max": 1.0}))
    assert max(row["target"] for row in blind.timeline) == 1


RPS_SETTINGS = LLMPolicySettings(**{**SETTINGS.__dict__, "target_rps_per_replica": 2.0})


def test_with_a_known_rate_per_replica_the_arrival_rate_sizes_the_deployment():
    # 10 req/s arriving at 2 req/s per replica: 5 replicas, whatever share is refused.
    assert load_replicas(at_window_cap(replicas=2, arrivals=10.0, refused=6.0), RPS_SETTINGS) == 5
    assert load_replicas(at_window_cap(replicas=2, arrivals=10.0), RPS_SETTINGS) == 5
    out, _ = decisions(at_window_cap(replicas=2, arrivals=10.0), 10, settings=RPS_SETTINGS)
    assert out[4] == 2 and out[5] == 5  # after the upscale delay
    # In-flight requests beyond the replicas there are (10 replicas' worth at 4 each) add one at a time:
    # sized on them, the windows would size the deployment, not the load.
    busy = Signals(running_replicas=2, target_replicas=2, ongoing_requests={"r0": 20.0, "r1": 20.0},
                   arrival_rate_rps={"batch": 4.0})
    assert load_replicas(busy, RPS_SETTINGS) == 2
    out, state = decisions(busy, 10, settings=RPS_SETTINGS)
    assert out[4] == 2 and out[5] == 3
    assert any("in-flight requests need 10 replicas" in reason for reason in state.last_reasons)


def test_a_backlog_after_a_load_drop_adds_one_replica_at_a_time_not_its_size():
    # After a peak: 20 replicas still hold 40 requests each (80 replicas' worth at 10 per replica)
    # while the arrivals ask for 2. Sized on the backlog, the policy would jump to the cap; the
    # backlog drains or expires before a new replica starts, so only the one-at-a-time backstop.
    settings = LLMPolicySettings(**{**RPS_SETTINGS.__dict__, "max_replicas": 100, "target_ongoing_requests": 10})
    ids = [f"r{i}" for i in range(20)]
    backlog = Signals(running_replicas=20, target_replicas=20, ongoing_requests={i: 40.0 for i in ids},
                      arrival_rate_rps={"batch": 4.0})
    assert load_replicas(backlog, settings) == 2
    out, state = decisions(backlog, 10, settings=settings)
    assert out[4] == 20 and out[5] == 21
    assert any("in-flight requests need 80 replicas" in reason for reason in state.last_reasons)
    # While that replica starts, nothing more.
    starting = Signals(**{**backlog.__dict__, "target_replicas": 21})
    out, _ = decisions(starting, 30, settings=settings)
    assert set(out) == {21}


def test_refusals_lagging_a_load_drop_add_nothing_when_the_arrival_rate_is_known():
    # After a peak: 20 replicas, arrivals down to 4 req/s, but requests queued at the peak still
    # expire, so refusals outnumber arrivals. Without a rate per replica the refused share (capped at
    # 1) asks for refusal_scale_max x running; with one, the arrivals ask for 2 and nothing is added.
    after_peak = at_window_cap(replicas=20, arrivals=4.0, refused=30.0)
    out_share, _ = decisions(after_peak, 10)
    assert max(out_share) == SETTINGS.max_replicas
    out_rps, state = decisions(after_peak, 10, settings=RPS_SETTINGS)
    assert out_rps == [20] * 11
    assert not any("refused" in reason for reason in state.last_reasons)


def test_refusals_still_add_replicas_when_the_arrivals_say_there_are_enough():
    # The load test overstated capacity: arrivals ask for 5, 5 run, and 40% is still turned away.
    short = at_window_cap(replicas=5, arrivals=10.0, refused=4.0)
    out, state = decisions(short, 10, settings=RPS_SETTINGS)
    assert out[4] == 5 and out[5] == 6  # one more, the slow backstop
    assert any("refused" in reason for reason in state.last_reasons)
