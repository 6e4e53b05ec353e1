"""How the LLM autoscaling policy reads back the signals replicas report.

The names and the reporting side live with the serving shells (`serve_app.telemetry.autoscaling_signals`):
`autoscaling` imports `serve_app`, never the other way round. Pure: no Ray.
"""
from __future__ import annotations

from typing import Any, Mapping

from autoscaling.llm_policy import Signals
from serve_app.telemetry.autoscaling_signals import (ARRIVAL_RATE, IN_FLIGHT, KV_CACHE, QUEUE_DEPTH, REFUSED_RATE,
                                                     SLO_ATTAINMENT, SLO_SAMPLES)


def signals_from_metrics(metrics: Mapping[str, Mapping[Any, float]] | None, running_replicas: list[Any],
                         target_replicas: int) -> Signals:
    """The policy's view of Serve's aggregated custom metrics (keys of the inner maps: replica ids).

    Every replica reports the same router queue and rates (it reads them from the controller): take the largest.
    SLO attainment is weighted by each replica's sample count.
    """
    metrics = metrics or {}
    running = set(running_replicas)

    def per_replica(name: str) -> dict[str, float]:
        return {_name(rid): value for rid, value in (metrics.get(name) or {}).items() if rid in running}

    queue: dict[str, float] = {}
    met: dict[str, float] = {}
    samples: dict[str, float] = {}
    arrival_rate: dict[str, float] = {}
    refused_rate: dict[str, float] = {}
    for name, values in metrics.items():
        base, _, class_name = name.partition(":")
        values = {rid: v for rid, v in values.items() if rid in running}
        if not class_name or not values:
            continue
        if base == QUEUE_DEPTH:
            queue[class_name] = max(values.values())
        elif base == ARRIVAL_RATE:
            arrival_rate[class_name] = max(values.values())
        elif base == REFUSED_RATE:
            refused_rate[class_name] = max(values.values())
        elif base == SLO_SAMPLES:
            shares = metrics.get(f"{SLO_ATTAINMENT}:{class_name}") or {}
            samples[class_name] = sum(values.values())
            met[class_name] = sum(count * shares.get(rid, 0.0) for rid, count in values.items())
    attainment = {name: met[name] / samples[name] for name in samples if samples[name] > 0}
    return Signals(running_replicas=len(running_replicas), target_replicas=target_replicas,
                   ongoing_requests=per_replica(IN_FLIGHT), kv_cache_usage=per_replica(KV_CACHE),
                   queue_depth=queue, slo_attainment=attainment, slo_samples=samples,
                   arrival_rate_rps=arrival_rate, refused_rate_rps=refused_rate)


def _name(replica_id: Any) -> str:
    return getattr(replica_id, "unique_id", str(replica_id))
