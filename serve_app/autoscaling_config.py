"""The `autoscaling:` section of the config: LLMReplica's Ray Serve autoscaling, one source for the
app (`build_app`) and the KubeRay manifest (`serve_app.kuberay`). `llmserve autoscale` writes it from
a rate sweep (`autoscaling.capacity`).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from serve_app.strict_model import StrictModel

LLM_POLICY = "autoscaling.ray_policy:LLMAutoscalingPolicy"
# Ray Serve 2.60's `AutoscalingConfig.metrics_interval_s` default (`DEFAULT_METRICS_INTERVAL_S`), which we
# never set: replicas push their autoscaling metrics this often, whatever
# RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S says (2.60 defines that variable but reads it nowhere).
SERVE_METRICS_INTERVAL_S = 10.0

# Calm must last this long before a replica goes: 600 s, not 300, because it is Ray Serve's own default
# (AutoscalingConfig.downscale_delay_s), so the `default` and `llm` policies and the simulator's Ray
# baseline wait alike, and because an LLM replica takes minutes to start (weights, compile, CUDA
# graphs): a lull shorter than ten minutes is cheaper to ride out than a restart. The `llm` policy,
# the simulator and `llmserve autoscale` read it from here.
DOWNSCALE_DELAY_S = 600.0


class LLMPolicyKnobs(StrictModel):
    """When the `llm` policy adds a replica although ongoing requests look fine."""

    top_classes: list[str] = Field(
        default_factory=list, description="Classes whose router queueing or SLO misses trigger a scale-up "
        "(and whose queued requests count as load); empty: the highest class only.",
    )
    queue_depth_per_replica: float = Field(
        1.0, ge=0, description="Top-class requests queued in the router per replica above which to scale up.")
    slo_attainment_min: float = Field(
        0.9, ge=0, le=1, description="Share of a top class's recent requests meeting its TTFT and TPOT SLO "
        "below which to scale up.")
    slo_min_samples: int = Field(5, ge=1, description="Recent requests needed before SLO attainment counts.")
    slo_window_s: float = Field(30.0, gt=0, description="Replicas judge SLO attainment over this many seconds.")
    kv_cache_high: float = Field(0.9, gt=0, le=1, description="Mean KV cache usage ratio above which to scale up.")
    kv_cache_low: float = Field(0.6, ge=0, le=1, description="Scale-down needs mean KV usage below this.")

    @model_validator(mode="after")
    def _low_below_high(self) -> LLMPolicyKnobs:
        if self.kv_cache_low > self.kv_cache_high:
            raise ValueError(f"kv_cache_low ({self.kv_cache_low}) must not exceed kv_cache_high ({self.kv_cache_high})")
        return self


class AutoscalingSettings(StrictModel):
    """LLMReplica autoscaling. Delays: LLM replicas take minutes to start, so scale up fast, down slowly."""

    enabled: bool = Field(False, description="Autoscale LLMReplica; off: `replicas.num_replicas` fixed.")
    min_replicas: int = Field(1, ge=0, description="Fewest replicas (0 allows scale to zero).")
    max_replicas: int = Field(1, ge=1, description="Most replicas: ceil(peak rate / (capacity x (1 - headroom))).")
    initial_replicas: int | None = Field(None, ge=0, description="Replicas at deploy; empty: min_replicas.")
    target_ongoing_requests: float = Field(
        2.0, gt=0, description="In-flight requests per replica to aim for: in-flight at capacity x (1 - headroom).")
    target_rps_per_replica: float = Field(
        0.0, ge=0, description="`llm` policy: requests/s per replica to aim for (capacity x (1 - headroom), from "
        "`llmserve autoscale`); the router's arrival rate over it is the replicas the load needs, refused "
        "requests included. 0: unknown (the policy then infers the turned-away load from the refused share).")
    upscale_delay_s: float = Field(10.0, ge=0, description="Pressure must last this long before adding replicas.")
    downscale_delay_s: float = Field(DOWNSCALE_DELAY_S, ge=0, description="Calm must last this long before "
                                     "removing one.")
    upscale_smoothing_factor: float = Field(
        1.0, gt=0, description="Share of the gap to the wanted count closed per scale-up (Serve's upscaling_factor).")
    downscale_smoothing_factor: float = Field(
        0.5, gt=0, description="Share of the surplus removed per scale-down (Serve's downscaling_factor).")
    look_back_period_s: float = Field(
        30.0, gt=SERVE_METRICS_INTERVAL_S, description="Window Serve averages the replicas' metrics over; above "
        f"Serve's metrics push interval ({SERVE_METRICS_INTERVAL_S:g} s), or a window may hold no report at all.")
    drain_timeout_s: float = Field(
        120.0, gt=0, description="A replica being removed finishes the requests it holds for at most this long "
        "(Serve's graceful_shutdown_timeout_s); longer generations are cut.")
    policy: Literal["default", "llm"] = Field(
        "default", description="`default`: Ray Serve's ongoing-requests policy; `llm`: also router queue depth "
        "per class, SLO attainment and KV cache pressure (autoscaling/llm_policy.py).",
    )
    llm: LLMPolicyKnobs = Field(default_factory=LLMPolicyKnobs, description="Knobs of the `llm` policy.")

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        if self.initial_replicas is not None and not self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ValueError(f"initial_replicas ({self.initial_replicas}) is outside [min_replicas, max_replicas]")
        return self

    def top_classes(self, class_names: list[str]) -> list[str]:
        return list(self.llm.top_classes) or class_names[:1]

    def serve_autoscaling_config(self, class_names: list[str]) -> dict[str, Any] | None:
        """Ray Serve's `autoscaling_config` for LLMReplica (None when disabled). With the `llm` policy the
        delays travel to the policy itself and Serve's are 0 (else both would wait)."""
        if not self.enabled:
            return None
        llm = self.policy == "llm"
        config: dict[str, Any] = {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas}
        if self.initial_replicas is not None:
            config["initial_replicas"] = self.initial_replicas
        config.update(target_ongoing_requests=self.target_ongoing_requests,
                      upscale_delay_s=0.0 if llm else self.upscale_delay_s,
                      downscale_delay_s=0.0 if llm else self.downscale_delay_s,
                      upscaling_factor=self.upscale_smoothing_factor,
                      downscaling_factor=self.downscale_smoothing_factor,
                      look_back_period_s=self.look_back_period_s)
        if llm:
            knobs = self.llm.model_dump()
            knobs.pop("slo_window_s")
            knobs.update(top_classes=self.top_classes(class_names), min_replicas=self.min_replicas,
                         max_replicas=self.max_replicas, target_ongoing_requests=self.target_ongoing_requests,
                         target_rps_per_replica=self.target_rps_per_replica,
                         upscale_delay_s=self.upscale_delay_s, downscale_delay_s=self.downscale_delay_s)
            config["policy"] = {"policy_function": LLM_POLICY, "policy_kwargs": knobs}
        return config
