"""The autoscaling signals the serving shells report: metric names and the windows behind them.

Ray Serve carries custom autoscaling metrics as a flat `{name: number}` per replica
(`record_autoscaling_stats`) and hands the policy `{name: {replica_id: value averaged over the
look-back window}}`. Per-class values are encoded in the name (`router_queue_depth_requests:batch`).
Pure: no Ray, time passed in.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Mapping

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
