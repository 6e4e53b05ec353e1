"""build_app wires the config's `autoscaling:` section into the LLMReplica deployment (no cluster needed)."""
from __future__ import annotations

import pytest
from ray.serve._private.build_app import build_app as serve_build

from serve_app.app import build_app
from serve_app.config import parse_config


def replica_config(section: dict):
    built = serve_build(build_app(parse_config({"autoscaling": section, "replicas": {"num_replicas": 3}})), name="t")
    (replica,) = [d for d in built.deployments if d.name == "LLMReplica"]
    return replica._deployment_config


@pytest.mark.parametrize("policy", ["default", "llm"])
def test_autoscaling_section_becomes_the_replicas_autoscaling_config(policy):
    config = replica_config({"enabled": True, "policy": policy, "min_replicas": 1, "max_replicas": 4,
                             "upscale_delay_s": 7, "downscale_delay_s": 90, "drain_timeout_s": 200})
    autoscaling = config.autoscaling_config
    assert (autoscaling.min_replicas, autoscaling.max_replicas) == (1, 4)
    assert config.graceful_shutdown_timeout_s == 200  # a downscaled replica finishes what it holds
    if policy == "llm":
        assert autoscaling.policy.get_policy().__name__ == "LLMAutoscalingPolicy"
        assert autoscaling.policy.policy_kwargs["upscale_delay_s"] == 7
        assert (autoscaling.upscale_delay_s, autoscaling.downscale_delay_s) == (0, 0)
    else:
        assert autoscaling.policy.is_default_policy_function()
        assert (autoscaling.upscale_delay_s, autoscaling.downscale_delay_s) == (7, 90)


def test_autoscaling_off_keeps_the_fixed_count():
    config = replica_config({"enabled": False, "max_replicas": 4})
    assert config.autoscaling_config is None and config.num_replicas == 3
