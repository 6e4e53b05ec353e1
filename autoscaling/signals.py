"""The autoscaling signals a replica reports and how the policy reads them back.

Ray Serve carries custom autoscaling metrics as a flat `{name: number}` per replica
(`record_autoscaling_stats`) and hands the policy `{name: {replica_id: value averaged over the
look-back window}}`. Per-class values are encoded in the name (`router_queue_depth_requests:batch`).
Pure: no Ray, time passed in.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Mapping

from autoscaling.llm_policy import Signals

IN_FLIGHT = "replica_in_flight_requests"
KV_CACHE = "replica_kv_cache_usage_ratio"
QUEUE_DEPTH = "router_queue_depth_requests"  # + ":<class>"
SLO_ATTAINMENT = "slo_attainment_ratio"  # + ":<class>"
SLO_SAMPLES = "slo_samples_requests"  # + ":<class>"
ARRIVAL_RATE = "router_arrival_rate_rps"  # + ":<class>", arrivals past the per-caller rate limit
REFUSED_RATE = "router_capacity_refused_rate_rps"  # + ":<class>", refused for capacity (not rate limits)


def capacity_counts(class_stats: Mapping[str, Any]) -> tuple[int, int]:
    """(arrivals, capacity refusals) from one class of `RouterCore.stats()`, both cumulative.

    Per-caller rate-limit refusals are a caller's contract, not a lack of capacity: left out of
    both. Overload and queue-full refusals, requests shed for a higher class and queue-deadline
    expiries count as refused (the last two were admitted first, so they are arrivals already).
    """
    arrivals = class_stats["admitted"] + class_stats["refused_overload"] + class_stats["refused_queue_full"]
    refused = (class_stats["refused_overload"] + class_stats["refused_queue_full"] + class_stats["shed"]
               + class_stats["expired"])
    return arrivals, refused


class CounterRates:
    """Per class, the rate of cumulative counters over the last `window_s` seconds (fed with `now`)."""

    def __init__(self, window_s: float = 30.0):
        self._window_s = window_s
        self._samples: deque[tuple[float, dict[str, tuple[int, int]]]] = deque()

    def observe(self, counts: Mapping[str, tuple[int, int]], now: float) -> None:
        self._samples.append((now, dict(counts)))
        # Keep one sample at or before the window's start, so the rate spans the whole window.
        while len(self._samples) > 1 and self._samples[1][0] <= now - self._window_s:
            self._samples.popleft()

    def rates(self, now: float, stale_s: float) -> dict[str, tuple[float, float]]:
        """class -> (first counter per second, second counter per second); empty if stale or too few samples."""
        if len(self._samples) < 2 or now - self._samples[-1][0] > stale_s:
            return {}
        (t0, first), (t1, last) = self._samples[0], self._samples[-1]
        if t1 <= t0:
            return {}
        # A counter lower than before means the router restarted: count from zero.
        return {name: tuple(max(0, b - (a if a <= b else 0)) / (t1 - t0)
                            for a, b in zip(first.get(name, (0, 0)), now_counts))
                for name, now_counts in last.items()}


class SloWindow:
    """Per class: did each request of the last `window_s` seconds meet its TTFT and TPOT SLO?"""

    def __init__(self, window_s: float = 30.0):
        self._window_s = window_s
        self._seen: dict[str, deque[tuple[float, bool]]] = {}

    def observe(self, class_name: str, met: bool, now: float) -> None:
        self._seen.setdefault(class_name, deque()).append((now, met))

    def attainment(self, now: float) -> dict[str, tuple[float, int]]:
        """class -> (share meeting the SLO, requests judged); classes with none recently are left out."""
        result = {}
        for name, seen in self._seen.items():
            while seen and seen[0][0] < now - self._window_s:
                seen.popleft()
            if seen:
                result[name] = (sum(met for _, met in seen) / len(seen), len(seen))
        return result


def meets_slo(ttft_s: float | None, tpot_s: float | None, ttft_slo_s: float, tpot_slo_s: float) -> bool:
    """A request that never produced a token missed; one with a single token is judged on TTFT alone."""
    if ttft_s is None or ttft_s > ttft_slo_s:
        return False
    return tpot_s is None or tpot_s <= tpot_slo_s


def replica_stats(in_flight: int, kv_cache_usage: float, queue_depth: Mapping[str, float],
                  attainment: Mapping[str, tuple[float, int]],
                  router_rates: Mapping[str, tuple[float, float]] | None = None) -> dict[str, float]:
    """One replica's `record_autoscaling_stats` answer (`router_rates`: class -> (arrivals/s, refused/s))."""
    stats: dict[str, float] = {IN_FLIGHT: float(in_flight), KV_CACHE: float(kv_cache_usage)}
    for name, depth in queue_depth.items():
        stats[f"{QUEUE_DEPTH}:{name}"] = float(depth)
    for name, (share, count) in attainment.items():
        stats[f"{SLO_ATTAINMENT}:{name}"] = float(share)
        stats[f"{SLO_SAMPLES}:{name}"] = float(count)
    for name, (arrivals, refused) in (router_rates or {}).items():
        stats[f"{ARRIVAL_RATE}:{name}"] = float(arrivals)
        stats[f"{REFUSED_RATE}:{name}"] = float(refused)
    return stats


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
