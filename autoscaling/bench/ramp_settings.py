"""The two autoscaling policies a ramp benchmark compares, built from one base config so that they differ
only in `autoscaling.policy`: the same replica bounds, target, delays and look-back (CPU ramp
`benchmarks/autoscaling_ramp.py` and the H200 ramp `benchmarks/autoscaling_ramp_h200.py`)."""
from __future__ import annotations

import argparse

from serve_app.config import AppConfig, parse_config

POLICIES = ("default", "llm")


def config_for(base: AppConfig, policy: str, args: argparse.Namespace) -> AppConfig:
    """`base` with autoscaling on under `policy`; the scaling values come from the command line's
    --min-replicas, --max-replicas, --target-ongoing-requests, --upscale-delay-s, --downscale-delay-s,
    --look-back-period-s and --metrics-push-s."""
    data = base.model_dump(mode="json")
    data["autoscaling"] = {
        **data["autoscaling"], "enabled": True, "policy": policy, "min_replicas": args.min_replicas,
        "max_replicas": args.max_replicas, "target_ongoing_requests": args.target_ongoing_requests,
        "upscale_delay_s": args.upscale_delay_s, "downscale_delay_s": args.downscale_delay_s,
        "look_back_period_s": args.look_back_period_s,
    }
    env = {"RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": str(args.metrics_push_s)}
    data["replicas"]["env"] = {**data["replicas"].get("env", {}), **env}
    return parse_config(data)
