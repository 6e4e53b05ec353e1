"""Prometheus metrics through Ray's metrics export (`ray_` prefix; every node serves them on its
metrics export port, which KubeRay's pod monitors scrape). Names carry their unit.

Counters mirror the router's cumulative counts by difference, so the router core stays the one
place that counts (`RouterCore.stats()`).
"""
from __future__ import annotations

from typing import Any, Mapping

from ray.util.metrics import Counter, Gauge, Histogram

LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
TOKEN_LATENCY_BOUNDARIES_S = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28]
# Router counters: the core's per-class count -> (metric, extra tags).
ROUTER_COUNTS = {
    "admitted": ("llmserve_router_admitted_requests_total", {}),
    "refused_overload": ("llmserve_router_refused_requests_total", {"reason": "overload"}),
    "refused_rate_limit": ("llmserve_router_refused_requests_total", {"reason": "rate_limit"}),
    "refused_queue_full": ("llmserve_router_refused_requests_total", {"reason": "queue_full"}),
    "expired": ("llmserve_router_refused_requests_total", {"reason": "deadline"}),
    "shed": ("llmserve_router_refused_requests_total", {"reason": "shed_for_higher_priority"}),
    "served": ("llmserve_router_finished_requests_total", {"outcome": "served"}),
    "failed": ("llmserve_router_finished_requests_total", {"outcome": "failed"}),
    "cancelled": ("llmserve_router_finished_requests_total", {"outcome": "cancelled"}),
}


def count_increments(previous: Mapping[str, Mapping[str, int]], current: Mapping[str, Mapping[str, Any]],
                     keys: list[str]) -> list[tuple[str, str, int]]:
    """(class, key, increment) for every cumulative count that grew since `previous`."""
    increments = []
    for class_name, counts in current.items():
        before = previous.get(class_name, {})
        for key in keys:
            grown = int(counts.get(key, 0)) - int(before.get(key, 0))
            if grown > 0:
                increments.append((class_name, key, grown))
    return increments


# Prompt tokens of requests this ingress sent to a replica, and those vLLM found in its prefix cache:
# their rates' ratio is the replica's measured hit rate for routed traffic, summed over ingress replicas.
PREFIX_CACHE_COUNTS = {
    "prefix_cache_queries": "Prompt tokens of requests routed to the replica (ended)",
    "prefix_cache_hits": "Of those, tokens vLLM served from its prefix cache",
}


class RouterMetrics:
    def __init__(self) -> None:
        self._counters = {name: Counter(name, description=f"Router: {name.removeprefix('llmserve_router_')}",
                                        tag_keys=("priority_class", *extra))
                          for name, extra in {metric: tuple(tags) for metric, tags in ROUTER_COUNTS.values()}.items()}
        self._queue_depth = Gauge("llmserve_router_queue_depth_requests", description="Requests waiting in the "
                                  "router's queue", tag_keys=("priority_class",))
        self._running = Gauge("llmserve_router_running_requests", description="Requests dispatched and not ended",
                              tag_keys=("priority_class",))
        self._queue_wait = Histogram("llmserve_router_queue_wait_seconds", description="Time from admission to "
                                     "dispatch", boundaries=LATENCY_BOUNDARIES_S, tag_keys=("priority_class",))
        self._window = Gauge("llmserve_router_window_requests", description="A replica's in-flight window",
                             tag_keys=("replica",))
        self._in_flight = Gauge("llmserve_router_replica_in_flight_requests", description="Requests the router "
                                "has on a replica", tag_keys=("replica",))
        self._prefix_tokens = {key: Counter(f"llmserve_router_{key}_tokens_total", description=description,
                                            tag_keys=("replica",))
                               for key, description in PREFIX_CACHE_COUNTS.items()}
        self._predicted_hit_rate = Gauge("llmserve_router_predicted_prefix_hit_rate", description="Share of "
                                         "dispatched prompt tokens the router expected cached where it sent them "
                                         "(cache-aware routing)", tag_keys=("priority_class",))
        self._previous: dict[str, dict[str, int]] = {}
        self._previous_prefix: dict[str, dict[str, int]] = {}

    def observe_queue_wait(self, class_name: str, seconds: float) -> None:
        self._queue_wait.observe(seconds, tags={"priority_class": class_name})

    def observe_stats(self, stats: Mapping[str, Any]) -> None:
        classes = stats["classes"]
        for class_name, key, grown in count_increments(self._previous, classes, list(ROUTER_COUNTS)):
            metric, extra = ROUTER_COUNTS[key]
            self._counters[metric].inc(grown, tags={"priority_class": class_name, **extra})
        self._previous = {name: {key: int(c.get(key, 0)) for key in ROUTER_COUNTS} for name, c in classes.items()}
        for class_name, c in classes.items():
            self._queue_depth.set(c["queued"], tags={"priority_class": class_name})
            self._running.set(c["running"], tags={"priority_class": class_name})
        for replica, r in stats["replicas"].items():
            self._window.set(r["window"], tags={"replica": replica})
            self._in_flight.set(r["in_flight"], tags={"replica": replica})
        for replica, key, grown in count_increments(self._previous_prefix, stats["replicas"], list(PREFIX_CACHE_COUNTS)):
            self._prefix_tokens[key].inc(grown, tags={"replica": replica})
        self._previous_prefix = {rid: {key: int(r.get(key, 0)) for key in PREFIX_CACHE_COUNTS}
                                 for rid, r in stats["replicas"].items()}
        for class_name, c in classes.items():
            if c.get("predicted_prefix_hit_rate") is not None:
                self._predicted_hit_rate.set(c["predicted_prefix_hit_rate"], tags={"priority_class": class_name})


class RequestMetrics:
    """What clients experience, measured at the ingress, per priority class."""

    def __init__(self) -> None:
        tags = ("priority_class",)
        self._ttft = Histogram("llmserve_request_ttft_seconds", description="Time to first token at the ingress",
                               boundaries=LATENCY_BOUNDARIES_S, tag_keys=tags)
        self._tpot = Histogram("llmserve_request_tpot_seconds", description="Time per output token after the first",
                               boundaries=TOKEN_LATENCY_BOUNDARIES_S, tag_keys=tags)
        self._e2e = Histogram("llmserve_request_e2e_seconds", description="Request duration at the ingress",
                              boundaries=LATENCY_BOUNDARIES_S, tag_keys=tags)
        self._responses = Counter("llmserve_http_responses_total", description="Answered requests by status",
                                  tag_keys=("priority_class", "status"))

    def observe_ttft(self, class_name: str, seconds: float) -> None:
        self._ttft.observe(seconds, tags={"priority_class": class_name})

    def observe_end(self, class_name: str, status: int | str, e2e_s: float, tpot_s: float | None) -> None:
        """`status`: the HTTP status, or `stream_error` for a stream that ended with an error event."""
        tags = {"priority_class": class_name}
        self._e2e.observe(e2e_s, tags=tags)
        if tpot_s is not None:
            self._tpot.observe(tpot_s, tags=tags)
        self._responses.inc(1, tags={**tags, "status": str(status)})


SPEC_DECODE_COUNTS = {
    "drafted": "Speculative decoding: tokens drafted (n-gram or draft model)",
    "accepted": "Speculative decoding: drafted tokens the target model accepted",
}


class ReplicaMetrics:
    def __init__(self, replica_id: str) -> None:
        self._tags = {"replica": replica_id}
        tags = ("replica",)
        self._kv_usage = Gauge("llmserve_replica_kv_cache_usage_ratio", description="Share of the KV cache in use",
                               tag_keys=tags)
        self._running = Gauge("llmserve_replica_running_requests", description="Requests in the engine's batch",
                              tag_keys=tags)
        self._waiting = Gauge("llmserve_replica_waiting_requests", description="Requests waiting inside the engine",
                              tag_keys=tags)
        self._preemptions = Counter("llmserve_replica_preemptions_total", description="Engine preemptions",
                                    tag_keys=tags)
        self._preemptions_seen = 0
        self._spec_tokens = {key: Counter(f"llmserve_replica_spec_{key}_tokens_total", description=description,
                                          tag_keys=tags)
                             for key, description in SPEC_DECODE_COUNTS.items()}
        self._spec_seen = dict.fromkeys(SPEC_DECODE_COUNTS, 0)
        self._spec_acceptance = Gauge("llmserve_replica_spec_acceptance_ratio", description="Speculative decoding: "
                                      "accepted / drafted tokens since the engine started", tag_keys=tags)

    def observe_speculation(self, drafted_total: int, accepted_total: int) -> None:
        """The engine's cumulative draft counts; nothing is exported before the first draft (speculation off)."""
        if drafted_total <= 0:
            return
        for key, total in (("drafted", drafted_total), ("accepted", accepted_total)):
            if total > self._spec_seen[key]:
                self._spec_tokens[key].inc(total - self._spec_seen[key], tags=self._tags)
                self._spec_seen[key] = total
        self._spec_acceptance.set(accepted_total / drafted_total, tags=self._tags)

    def observe(self, kv_cache_usage: float, num_running: int, num_waiting: int, preemptions_total: int) -> None:
        self._kv_usage.set(kv_cache_usage, tags=self._tags)
        self._running.set(num_running, tags=self._tags)
        self._waiting.set(num_waiting, tags=self._tags)
        if preemptions_total > self._preemptions_seen:
            self._preemptions.inc(preemptions_total - self._preemptions_seen, tags=self._tags)
            self._preemptions_seen = preemptions_total
