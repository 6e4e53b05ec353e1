"""Ray Serve 2.60 adapter of the LLM autoscaling policy (`autoscaling.llm_policy`).

Configured as `AutoscalingConfig(policy=AutoscalingPolicy(policy_function="autoscaling.ray_policy:
LLMAutoscalingPolicy", policy_kwargs={...}))`. Serve instantiates a class policy once with
`policy_kwargs` and calls it every control-loop tick with an `AutoscalingContext`; it then applies
the config's scaling factors, delays and [min, max] on top. This policy keeps its own delays (its
scale-down needs *all* signals calm for the delay, not just a lower count), so the app sets Serve's
`upscale_delay_s`/`downscale_delay_s` to 0 when it is chosen (`serve_app.autoscaling_config`).
No Ray import: the context is read by attribute only.
"""
from __future__ import annotations

import logging
from typing import Any

from autoscaling.llm_policy import LLMPolicySettings, PolicyState, decide_replicas
from autoscaling.signals import signals_from_metrics

logger = logging.getLogger("ray.serve")
STATE_KEY = "llm_policy"


def llm_autoscaling_policy(ctx: Any, settings: LLMPolicySettings) -> tuple[int, dict[str, Any]]:
    """One decision from Serve's context; the policy's state lives under `STATE_KEY` in ctx.policy_state."""
    signals = signals_from_metrics(ctx.aggregated_metrics, list(ctx.running_replicas), ctx.target_num_replicas)
    bounded = LLMPolicySettings(**{**settings.__dict__, "min_replicas": ctx.capacity_adjusted_min_replicas,
                                   "max_replicas": ctx.capacity_adjusted_max_replicas})
    state = PolicyState.from_dict((ctx.policy_state or {}).get(STATE_KEY, {}))
    replicas, next_state = decide_replicas(signals, bounded, state, now=ctx.current_time)
    if replicas != ctx.target_num_replicas:
        logger.info("llm autoscaling policy: %d -> %d replicas (%s)", ctx.target_num_replicas, replicas,
                    "; ".join(next_state.last_reasons) or "load")
    return replicas, {**(ctx.policy_state or {}), STATE_KEY: next_state.as_dict()}


class LLMAutoscalingPolicy:
    """Class form, so Serve passes `policy_kwargs` (the config's `autoscaling.llm` knobs and delays)."""

    def __init__(self, **policy_kwargs: Any):
        self.settings = LLMPolicySettings(**{key: tuple(value) if key == "top_classes" else value
                                             for key, value in policy_kwargs.items()})

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        return llm_autoscaling_policy(ctx, self.settings)
