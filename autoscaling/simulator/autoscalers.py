"""Autoscalers for the simulated cluster: Ray Serve's default policy, and our LLM policy.

`RayDefaultAutoscaler` reproduces Ray Serve 2.60's default (`ray/serve/autoscaling_policy.py`:
`replica_queue_length_autoscaling_policy` wrapped by `_apply_autoscaling_config`, then
`apply_bounds`) without importing Ray: desired = total ongoing requests (averaged over the
look-back window) / target_ongoing_requests, moved towards by the up/down scaling factors, and
applied only after the wish has held for upscale_delay_s / downscale_delay_s. A unit test checks
it against Ray's own functions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from autoscaling.simulator.signals import ClusterSignals
from serve_app.autoscaling_config import DOWNSCALE_DELAY_S

_DELAY_ELAPSED_EPS_S = 1e-6  # as Ray's


@dataclass(frozen=True)
class RayDefaultSettings:
    """The `autoscaling_config` fields the default policy reads (Ray's defaults; the scale-down delay is
    ours, which is Ray's too)."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = DOWNSCALE_DELAY_S
    downscale_to_zero_delay_s: float | None = None
    upscaling_factor: float = 1.0  # Ray: upscaling_factor or upscale_smoothing_factor or smoothing_factor
    downscaling_factor: float = 1.0


def scaled_replicas(desired: float, current: int, settings: RayDefaultSettings) -> int:
    """Ray's `_apply_scaling_factors`."""
    if current == 0:
        return math.ceil(desired)
    delta = desired - current
    factor = settings.upscaling_factor if delta > 0 else settings.downscaling_factor
    scaled = math.ceil(current + factor * delta)
    if math.ceil(float(desired)) < current and scaled == current:
        scaled -= 1
    return scaled


class RayDefaultAutoscaler:
    def __init__(self, settings: RayDefaultSettings) -> None:
        self.settings = settings
        self._counter = 0  # >0: consecutive upscale wishes, <0: downscale
        self._since: float | None = None

    def __call__(self, signals: ClusterSignals) -> int:
        s = self.settings
        current, target = signals.running_replicas, signals.target_replicas
        total = signals.total_ongoing_requests
        if current == 0:
            # Cold start fast path: no delay.
            decision = max(math.ceil(s.upscaling_factor), target) if total > 0 else target
            return self._bounded(decision)
        desired = scaled_replicas(total / s.target_ongoing_requests, current, s)
        return self._bounded(self._delayed(max(0, desired), target, signals.now))

    def _delayed(self, desired: int, target: int, now: float) -> int:
        """Ray's `_apply_delay_logic`: act once the same-direction wish has lasted the delay."""
        s = self.settings
        decision = target
        if desired > target:
            if self._counter < 0:
                self._counter, self._since = 0, None
            self._counter += 1
            self._since = now if self._since is None else self._since
            if now - self._since + _DELAY_ELAPSED_EPS_S >= s.upscale_delay_s:
                self._counter, self._since, decision = 0, None, desired
        elif desired < target:
            if self._counter > 0:
                self._counter, self._since = 0, None
            self._counter -= 1
            if target == 1:
                delay = s.downscale_to_zero_delay_s if s.downscale_to_zero_delay_s is not None else s.downscale_delay_s
            else:
                delay, desired = s.downscale_delay_s, max(1, desired)
            self._since = now if self._since is None else self._since
            if now - self._since + _DELAY_ELAPSED_EPS_S >= delay:
                self._counter, self._since, decision = 0, None, desired
        else:
            self._counter, self._since = 0, None
        return decision

    def _bounded(self, replicas: int) -> int:
        return max(self.settings.min_replicas, min(self.settings.max_replicas, replicas))


class LLMPolicyAutoscaler:
    """Adapter for `autoscaling.llm_policy.decide_replicas` (imported when first used)."""

    def __init__(self, settings: Any = None, **overrides: Any) -> None:
        from autoscaling import llm_policy

        self._policy = llm_policy
        self.settings = settings if settings is not None else llm_policy.LLMPolicySettings(**overrides)
        self._state = llm_policy.PolicyState()
        self.last_reasons: tuple[str, ...] = ()

    def __call__(self, signals: ClusterSignals) -> int:
        view = self._policy.Signals(
            running_replicas=signals.running_replicas, target_replicas=signals.target_replicas,
            ongoing_requests=dict(signals.ongoing_requests), kv_cache_usage=dict(signals.kv_cache_usage),
            queue_depth={k: float(v) for k, v in signals.queue_depth.items()},
            slo_attainment=dict(signals.slo_attainment),
            slo_samples={k: float(v) for k, v in signals.slo_samples.items()},
            arrival_rate_rps=dict(signals.class_arrival_rate_rps),
            refused_rate_rps=dict(signals.class_refused_rate_rps))
        replicas, self._state = self._policy.decide_replicas(view, self.settings, self._state, signals.now)
        self.last_reasons = self._state.last_reasons
        return replicas
