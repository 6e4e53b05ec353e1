"""The Ray Serve adapter of the LLM policy and the signals replicas report (autoscaling/ray_policy.py,
serve_app/telemetry/autoscaling_signals.py, autoscaling/signals.py), through Ray Serve 2.60's own
AutoscalingContext and policy wrapper."""
from __future__ import annotations

import pytest
from ray.serve._private.common import DeploymentID, ReplicaID
from ray.serve.autoscaling_policy import _apply_autoscaling_config
from ray.serve.config import AutoscalingConfig, AutoscalingContext, AutoscalingPolicy

from autoscaling.ray_policy import LLMAutoscalingPolicy
from autoscaling.signals import signals_from_metrics
from serve_app.autoscaling_config import AutoscalingSettings
from serve_app.statistics import meets_slo
from serve_app.telemetry.autoscaling_signals import IN_FLIGHT, KV_CACHE, SloWindow, replica_stats

DEPLOYMENT = DeploymentID(name="LLMReplica", app_name="app")
CLASSES = ["interactive", "standard", "batch"]


def replica(n: int) -> ReplicaID:
    return ReplicaID(unique_id=f"r{n}", deployment_id=DEPLOYMENT)


def metrics_for(per_replica: dict[ReplicaID, dict[str, float]]) -> dict[str, dict[ReplicaID, float]]:
    """Serve's aggregated_metrics shape: metric -> replica -> value."""
    out: dict[str, dict[ReplicaID, float]] = {}
    for rid, stats in per_replica.items():
        for name, value in stats.items():
            out.setdefault(name, {})[rid] = value
    return out


def serve_config(**section) -> AutoscalingConfig:
    settings = AutoscalingSettings(enabled=True, policy="llm", min_replicas=1, max_replicas=3,
                                   target_ongoing_requests=4, upscale_delay_s=5, downscale_delay_s=30, **section)
    return AutoscalingConfig(**settings.serve_autoscaling_config(CLASSES))


def context(config: AutoscalingConfig, replicas: list[ReplicaID], target: int, metrics, now: float,
            state: dict) -> AutoscalingContext:
    return AutoscalingContext(
        deployment_id=DEPLOYMENT, deployment_name="LLMReplica", app_name="app", current_num_replicas=len(replicas),
        target_num_replicas=target, running_replicas=replicas, total_num_requests=0.0, total_queued_requests=0.0,
        aggregated_metrics=metrics, raw_metrics={}, capacity_adjusted_min_replicas=config.min_replicas,
        capacity_adjusted_max_replicas=config.max_replicas, policy_state=state, last_scale_up_time=None,
        last_scale_down_time=None, current_time=now, config=config)


def serve_policy(config: AutoscalingConfig):
    """What Serve's controller runs: the class instantiated with policy_kwargs, wrapped with factors/delays."""
    policy = config.policy.get_policy()
    assert isinstance(policy, type) and policy.__name__ == "LLMAutoscalingPolicy"
    return _apply_autoscaling_config(policy(**config.policy.policy_kwargs))


def drive(config, replicas, target, per_replica, seconds, start=0.0, state=None):
    policy = serve_policy(config)
    state = dict(state or {})
    decisions = []
    for t in range(int(start), int(start + seconds) + 1):
        replicas_out, state = policy(context(config, replicas, target, metrics_for(per_replica), float(t), state))
        decisions.append((float(t), replicas_out))
    return decisions, state


def test_router_queue_scales_up_after_the_policys_own_delay_not_twice():
    config = serve_config()
    assert (config.upscale_delay_s, config.downscale_delay_s) == (0, 0)  # the policy keeps them
    stats = replica_stats(in_flight=2, kv_cache_usage=0.3, queue_depth={"interactive": 3, "batch": 0},
                          attainment={})
    decisions, _ = drive(config, [replica(0)], 1, {replica(0): stats}, 10)
    assert next((t, r) for t, r in decisions if r != 1) == (5.0, 2)


def test_default_policy_would_not_see_the_router_queue():
    stats = replica_stats(in_flight=2, kv_cache_usage=0.3, queue_depth={"interactive": 3}, attainment={})
    config = AutoscalingConfig(**AutoscalingSettings(enabled=True, min_replicas=1, max_replicas=3,
                                                     target_ongoing_requests=4, upscale_delay_s=0)
                               .serve_autoscaling_config(CLASSES))
    assert config.policy == AutoscalingPolicy()  # Serve's default
    policy = _apply_autoscaling_config(config.policy.get_policy())
    ctx = context(config, [replica(0)], 1, metrics_for({replica(0): stats}), 0.0, {})
    ctx._total_num_requests_value = 2.0  # what Serve's handles count: the replica's in-flight only
    assert policy(ctx)[0] == 1


def test_calm_replicas_scale_down_after_the_delay_one_at_a_time():
    config = serve_config()
    calm = replica_stats(in_flight=0, kv_cache_usage=0.05, queue_depth={"interactive": 0},
                         attainment={"interactive": (1.0, 20)})
    replicas = [replica(0), replica(1), replica(2)]
    decisions, _ = drive(config, replicas, 3, {r: calm for r in replicas}, 40)
    assert next((t, r) for t, r in decisions if r != 3) == (30.0, 2)


def test_slo_misses_reported_by_replicas_scale_up():
    config = serve_config()
    missing = replica_stats(in_flight=1, kv_cache_usage=0.2, queue_depth={},
                            attainment={"interactive": (0.5, 10)})
    decisions, _ = drive(config, [replica(0), replica(1)], 2, {replica(0): missing, replica(1): missing}, 6)
    assert next((t, r) for t, r in decisions if r != 2) == (5.0, 3)


def test_signals_weight_slo_by_samples_and_ignore_replicas_that_left():
    per_replica = {
        replica(0): replica_stats(3, 0.5, {"interactive": 2}, {"interactive": (1.0, 30)}),
        replica(1): replica_stats(1, 0.7, {"interactive": 4}, {"interactive": (0.0, 10)}),
        replica(9): replica_stats(50, 1.0, {"interactive": 99}, {"interactive": (0.0, 1000)}),  # stopped
    }
    signals = signals_from_metrics(metrics_for(per_replica), [replica(0), replica(1)], 2)
    assert signals.ongoing_requests == {"r0": 3.0, "r1": 1.0}
    assert signals.kv_cache_usage == {"r0": 0.5, "r1": 0.7}
    assert signals.queue_depth == {"interactive": 4}  # the same router queue, reported twice: latest largest
    assert signals.slo_attainment["interactive"] == pytest.approx(30 / 40)
    assert signals.slo_samples["interactive"] == 40


def test_replica_stats_are_flat_numbers_as_serve_requires():
    stats = replica_stats(2, 0.25, {"interactive": 1}, {"batch": (0.5, 4)})
    assert all(isinstance(v, float) for v in stats.values())
    assert stats[IN_FLIGHT] == 2 and stats[KV_CACHE] == 0.25


def test_slo_window_forgets_old_requests():
    window = SloWindow(window_s=10)
    window.observe("interactive", True, now=0.0)
    window.observe("interactive", False, now=5.0)
    assert window.attainment(now=6.0) == {"interactive": (0.5, 2)}
    assert window.attainment(now=12.0) == {"interactive": (0.0, 1)}
    assert window.attainment(now=20.0) == {}


@pytest.mark.parametrize("ttft, tpot, met", [(0.4, 0.05, True), (0.6, 0.05, False), (0.4, 0.2, False),
                                             (None, None, False), (0.4, None, True)])
def test_meets_slo(ttft, tpot, met):
    assert meets_slo(ttft, tpot, ttft_slo_s=0.5, tpot_slo_s=0.1) is met


def test_policy_kwargs_reach_the_policy():
    config = serve_config(llm={"kv_cache_high": 0.8, "top_classes": ["interactive", "standard"]})
    policy = LLMAutoscalingPolicy(**config.policy.policy_kwargs)
    assert policy.settings.kv_cache_high == 0.8
    assert policy.settings.top_classes == ("interactive", "standard")
    assert (policy.settings.upscale_delay_s, policy.settings.downscale_delay_s) == (5, 30)
    assert policy.settings.target_rps_per_replica == 0.0  # unknown unless the capacity model set it
    sized = LLMAutoscalingPolicy(**serve_config(target_rps_per_replica=23.73).policy.policy_kwargs)
    assert sized.settings.target_rps_per_replica == 23.73
