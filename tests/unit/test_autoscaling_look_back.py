"""The look-back window must exceed Serve's metrics push interval: Ray Serve only warns (a FutureWarning
in every ramp test run) and a window shorter than the push interval may average over no report."""
from __future__ import annotations

import warnings

import pytest
from pydantic import ValidationError
from ray.serve.config import DEFAULT_METRICS_INTERVAL_S, AutoscalingConfig

from serve_app.autoscaling_config import SERVE_METRICS_INTERVAL_S, AutoscalingSettings


def test_our_interval_is_ray_serves_default():
    assert SERVE_METRICS_INTERVAL_S == DEFAULT_METRICS_INTERVAL_S


@pytest.mark.parametrize("look_back", [5.0, SERVE_METRICS_INTERVAL_S])
def test_a_look_back_not_above_the_metrics_interval_is_refused_naming_the_field(look_back):
    with pytest.raises(ValidationError, match="look_back_period_s"):
        AutoscalingSettings(enabled=True, look_back_period_s=look_back)


@pytest.mark.parametrize("policy", ["default", "llm"])
def test_an_accepted_config_makes_ray_serve_warn_nothing(policy):
    settings = AutoscalingSettings(enabled=True, policy=policy, look_back_period_s=SERVE_METRICS_INTERVAL_S + 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AutoscalingConfig(**settings.serve_autoscaling_config(["interactive"]))
