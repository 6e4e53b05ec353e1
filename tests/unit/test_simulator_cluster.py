"""Cluster simulation: outcomes match the router core's counts, the Ray default autoscaler matches
Ray's own functions, and the default policy scales up under a step load."""
import math
import random
from collections import Counter

import pytest

from autoscaling.loadtest.arrivals import step
from autoscaling.loadtest.lengths import Fixed
from autoscaling.simulator.autoscalers import RayDefaultAutoscaler, RayDefaultSettings
from autoscaling.simulator.cluster import Cluster, ClusterConfig
from autoscaling.simulator.signals import ClusterSignals
from autoscaling.simulator.step_model import StepModel
from autoscaling.simulator.fit import PROFILE
from autoscaling.simulator.workload import ClassLoad, generate
from serve_app.policy.priority_classes import PriorityClass, PriorityClasses

CLASSES = PriorityClasses([PriorityClass("interactive", 0, 0.5, 0.1, 2.0), PriorityClass("batch", 1, 30.0, 1.0, 20.0)])


def test_every_simulated_outcome_matches_the_router_cores_own_count():
    # One replica and no autoscaler under several times its load: the router refuses at the door
    # (429), lets requests wait past their deadline (503) and serves the rest; the simulator must turn
    # each of its decisions into exactly one client outcome.
    model = StepModel.load(PROFILE)
    workload = {"interactive": ClassLoad(0.3, Fixed(256), Fixed(64)), "batch": ClassLoad(0.7, Fixed(256), Fixed(128))}
    requests = list(generate(step([(5, 5.0), (20, 300.0)]), workload, seed=2))
    cluster = Cluster(ClusterConfig(CLASSES, initial_replicas=1, seed=3), model)
    result = cluster.run(requests, until_s=300)
    assert len(result.outcomes) == len(requests)
    counts = cluster.router_stats()["classes"]
    for name, c in counts.items():
        statuses = Counter(o.status for o in result.outcomes if o.request.class_name == name)
        assert statuses[200] == c["served"] and statuses[500] == c["failed"] == 0, name
        assert statuses[429] == c["refused_overload"] + c["refused_rate_limit"] + c["refused_queue_full"], name
        assert statuses[503] == c["expired"] + c["shed"], name
        assert statuses[0] == c["queued"] == c["running"] == 0, name  # every request ended
    assert all(counts[name]["refused_overload"] and counts[name]["served"] for name in CLASSES.names)
    assert sum(c["expired"] for c in counts.values()) > 0


def _ray_decision(settings: RayDefaultSettings, total: float, current: int, target: int, state: dict, now: float):
    from ray.serve._private.common import DeploymentID
    from ray.serve.autoscaling_policy import (_apply_delay_logic, _apply_scaling_factors,
                                              _core_replica_queue_length_policy)
    from ray.serve.config import AutoscalingConfig, AutoscalingContext

    config = AutoscalingConfig(min_replicas=settings.min_replicas, max_replicas=settings.max_replicas,
                               target_ongoing_requests=settings.target_ongoing_requests,
                               upscale_delay_s=settings.upscale_delay_s, downscale_delay_s=settings.downscale_delay_s,
                               upscaling_factor=settings.upscaling_factor,
                               downscaling_factor=settings.downscaling_factor)
    ctx = AutoscalingContext(
        deployment_id=DeploymentID(name="LLMReplica", app_name="app"), deployment_name="LLMReplica", app_name="app",
        current_num_replicas=current, target_num_replicas=target, running_replicas=[], total_num_requests=total,
        total_queued_requests=0.0, aggregated_metrics={}, raw_metrics={}, capacity_adjusted_min_replicas=settings.min_replicas,
        capacity_adjusted_max_replicas=settings.max_replicas, policy_state={}, last_scale_up_time=None,
        last_scale_down_time=None, current_time=now, config=config)
    desired, _ = _core_replica_queue_length_policy(ctx)
    scaled = _apply_scaling_factors(desired, current, config)
    decision, state = _apply_delay_logic(max(0, scaled), target, config, state, _now=now)
    return max(settings.min_replicas, min(settings.max_replicas, math.ceil(decision))), state


def test_ray_default_autoscaler_matches_rays_policy_functions():
    pytest.importorskip("ray.serve.autoscaling_policy")
    settings = RayDefaultSettings(min_replicas=1, max_replicas=20, target_ongoing_requests=16, upscale_delay_s=30,
                                  downscale_delay_s=120, upscaling_factor=0.7, downscaling_factor=0.5)
    ours = RayDefaultAutoscaler(settings)
    rng = random.Random(5)
    target, state, visited = 2, {}, set()
    for tick in range(600):
        now = float(tick)
        level = [2, 6, 3, 10, 1, 5][tick // 100]  # replicas the load needs, phase by phase
        total = max(0.0, 16 * level + rng.uniform(-12, 12))
        signals = ClusterSignals(now=now, running_replicas=target, target_replicas=target, ongoing_requests={},
                                 total_ongoing_requests=total, queue_depth={}, kv_cache_usage={})
        expected, state = _ray_decision(settings, total, target, target, state, now)
        assert ours(signals) == expected, f"tick {tick}"
        target = expected
        visited.add(target)
    assert len(visited) >= 4  # the sequence exercised scaling up and down


def test_default_policy_scales_up_under_a_step_load_after_delay_and_startup():
    model = StepModel.load(PROFILE)
    workload = {"interactive": ClassLoad(0.3, Fixed(256), Fixed(64)), "batch": ClassLoad(0.7, Fixed(256), Fixed(128))}
    requests = list(generate(step([(30, 2.0), (150, 60.0)]), workload, seed=1))
    settings = RayDefaultSettings(min_replicas=1, max_replicas=8, target_ongoing_requests=16, upscale_delay_s=10)
    config = ClusterConfig(CLASSES, initial_replicas=1, startup_delay_s=40, control_period_s=1.0, look_back_s=10)
    result = Cluster(config, model, RayDefaultAutoscaler(settings)).run(requests, until_s=400)
    timeline = result.timeline
    first_up = next(row["t_s"] for row in timeline if row["target"] > 1)
    first_running = next(row["t_s"] for row in timeline if row["running"] > 1)
    assert 30 + 10 <= first_up  # the load steps up at 30 s; Ray waits upscale_delay_s
    assert first_running >= first_up + 40 - config.timeline_period_s  # replicas take startup_delay_s
    assert max(row["running"] for row in timeline) >= 3
    served = [o for o in result.outcomes if o.status == 200]
    assert len(served) > 0.5 * len(requests)
    assert result.gpu_seconds > 1 * result.duration_s
