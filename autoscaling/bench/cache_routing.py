"""Issue 17's cache-aware routing and tenant fairness benchmark, its pure parts: the workloads, the KV
cache size that makes the tenants' prefixes fit two replicas but not one, what a part file keeps of a
load-test result, and the goals summary.json judges (benchmarks/cache_routing_h200.py does the I/O).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoscaling.bench.priority_load import OursOptions, ours_config
from autoscaling.bench.vs_vllm_goals import goal
from autoscaling.loadtest.arrivals import GammaArrivals
from autoscaling.loadtest.lengths import Fixed
from autoscaling.loadtest.shared_prefix import DEFAULT_BLOCK_SIZE, SharedPrefixSpec
from serve_app.policy.api_keys import hash_api_key
from serve_app.statistics import percentile

ROUTING_MODES = ("least_outstanding_tokens", "approximate_prefix", "precise_prefix")
BASELINE, APPROXIMATE, PRECISE = ROUTING_MODES
CLASS = {"name": "standard", "ttft_slo_s": 2.0, "tpot_slo_s": 0.2, "queue_deadline_s": 15.0}
# Issue 17's thresholds.
TTFT_P90_IMPROVEMENT_GOAL = 5.0
THROUGHPUT_IMPROVEMENT_GOAL = 1.3
HIT_RATE_OF_IDEAL_GOAL = 0.9
NO_PREFIX_TOLERANCE = 0.02
LIGHT_GOODPUT_OF_ALONE_GOAL = 0.9
WEIGHT_RATIO_TOLERANCE = 0.1
# The fairness part's tenants: two of weight 1 at 10:1 demand; two of weights 2:1 at equal demand.
FAIRNESS_TENANTS = {"heavy": 1.0, "light": 1.0, "gold": 2.0, "silver": 1.0}
HEAVY_TO_LIGHT = 10.0


@dataclass(frozen=True)
class RoutingWorkload:
    """Issue 17's example: 40 tenants with long prefixes, a new short suffix on every request."""

    tenants: int = 40
    prefix_len: int = 3000  # synthetic Llama-2-7B's context is 4,096 tokens
    suffix_len: int = 64
    output_len: int = 64
    # Of the prefixes' tokens, the share one replica's KV cache keeps room for: < 1 (they do not fit
    # one replica), > 0.5 (half of them, what a perfect split gives each of two, fit).
    cache_share: float = 0.75

    def prefix_tokens(self) -> int:
        return self.tenants * self.prefix_len

    def shared(self, rate_rps: float, duration_s: float, seed: int = 0, *, max_concurrency: int | None = None,
               num_requests: int | None = None) -> SharedPrefixSpec:
        return SharedPrefixSpec(arrival=GammaArrivals(rate_rps), tenants=self.tenants, prefix_len=self.prefix_len,
                                suffix_len=self.suffix_len, output_len=Fixed(self.output_len), conversations=None,
                                class_name=CLASS["name"], duration_s=None if num_requests else duration_s,
                                num_requests=num_requests, max_concurrency=max_concurrency, seed=seed)

    def no_prefix(self, rate_rps: float, duration_s: float, seed: int = 100) -> SharedPrefixSpec:
        """The same prompt and output lengths, nothing shared (each request its own words)."""
        return SharedPrefixSpec(arrival=GammaArrivals(rate_rps), tenants=self.tenants, prefix_len=0,
                                suffix_len=self.prefix_len + self.suffix_len, output_len=Fixed(self.output_len),
                                conversations=None, class_name=CLASS["name"], duration_s=duration_s, seed=seed)


def kv_cache_tokens(workload: RoutingWorkload, max_num_seqs: int, block_size: int = DEFAULT_BLOCK_SIZE) -> int:
    """One replica's KV cache: `cache_share` of the prefixes plus every running request's own suffix and
    output (those blocks are not shared), in whole blocks."""
    tokens = workload.cache_share * workload.prefix_tokens() + max_num_seqs * (workload.suffix_len + workload.output_len)
    return math.ceil(tokens / block_size) * block_size


def kv_cache_memory_bytes(tokens: int, kv_bytes_per_token: int) -> int:
    """vLLM's `kv_cache_memory_bytes` for `tokens` (bytes per token from serve_app.memory)."""
    return tokens * kv_bytes_per_token


def fairness_specs(capacity_rps: float, duration_s: float, *, prompt_len: int = 512,
                   output_len: int = 128) -> dict[str, SharedPrefixSpec]:
    """One replica at twice its capacity: heavy:light 10:1; the light tenant alone at its same rate;
    gold:silver (weights 2:1) at equal demand. No shared prefixes; keys are filled in by the caller."""
    total = 2.0 * capacity_rps
    light_rate = total / (HEAVY_TO_LIGHT + 1)

    def spec(names: tuple[str, ...], weights: tuple[float, ...] | None, rate: float, seed: int) -> SharedPrefixSpec:
        return SharedPrefixSpec(arrival=GammaArrivals(rate), tenants=len(names), prefix_len=0, suffix_len=prompt_len,
                                output_len=Fixed(output_len), conversations=None, tenant_weights=weights,
                                class_name=CLASS["name"], duration_s=duration_s, seed=seed, names=names)

    return {"contended": spec(("heavy", "light"), (HEAVY_TO_LIGHT, 1.0), total, 1),
            "light_alone": spec(("light",), None, light_rate, 1),
            "weighted": spec(("gold", "silver"), None, total, 2)}


# ---- what a part file keeps ----------------------------------------------------------------------
RUN_KEYS = ("sent", "completed", "refused_429", "refused_503", "failed", "ttft_s", "tpot_s",
            "output_token_throughput_tps", "request_throughput_rps", "goodput_rps")


def run_entry(result: Mapping[str, Any], hit_rate: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A load-test result (with its requests) as a part file keeps it: the overall and per-tenant
    figures, every completed request's TTFT (for the CDF plot), each tenant's output tokens completed
    within the arrival window (service while every tenant still had demand), the ideal and measured
    prefix-cache hit rates."""
    requests = result.get("requests") or []
    window_end = max((r["send_s"] for r in requests), default=0.0)
    served: dict[str, int] = {}
    for r in requests:
        if r["outcome"] == "completed" and r["end_s"] <= window_end and r.get("tenant") is not None:
            served[r["tenant"]] = served.get(r["tenant"], 0) + (r["output_tokens"] or 0)
    return {"offered_rate_rps": result.get("offered_rate_rps"), "duration_s": result.get("duration_s"),
            "overall": {key: result["overall"][key] for key in RUN_KEYS},
            "tenants": {name: {**{key: stats[key] for key in RUN_KEYS},
                               "goodput_in_window_rps": _in_window(stats, result, window_end)}
                        for name, stats in (result.get("tenants") or {}).items()},
            "ttfts_s": sorted(r["ttft_s"] for r in requests if r["outcome"] == "completed" and r["ttft_s"] is not None),
            "served_tokens_in_window": served, "arrival_window_s": window_end,
            "ideal_prefix_hit_rate": result["workload"].get("ideal_prefix_hit_rate"),
            "measured_prefix_hit_rate": dict(hit_rate) if hit_rate is not None else None}


def _in_window(stats: Mapping[str, Any], result: Mapping[str, Any], window_s: float) -> float | None:
    """Requests within their SLO per second of the arrival window: runs whose backlogs drain for
    different times compare on the demand's own time base."""
    met = stats["goodput_rps"] * (result.get("duration_s") or 0.0)
    return met / window_s if window_s > 0 else None


def measured_hit_rate(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, Any]:
    """The replicas' prefix-cache hit rate over a run from two `/v1/router/stats` snapshots: from token
    counters (`prefix_cache_queries` / `prefix_cache_hits` per replica) when the replicas report them,
    else the mean of their `prefix_cache_hit_rate` after the run (then it also counts earlier runs)."""
    replicas_after = (after or {}).get("replicas") or {}
    replicas_before = (before or {}).get("replicas") or {}
    if replicas_after and all("prefix_cache_queries" in r and "prefix_cache_hits" in r
                              for r in replicas_after.values()):
        queries = hits = 0.0
        for rid, r in replicas_after.items():
            earlier = replicas_before.get(rid, {})
            queries += r["prefix_cache_queries"] - earlier.get("prefix_cache_queries", 0)
            hits += r["prefix_cache_hits"] - earlier.get("prefix_cache_hits", 0)
        return {"hit_rate": hits / queries if queries > 0 else None, "source": "token counters over the run"}
    rates = [r["prefix_cache_hit_rate"] for r in replicas_after.values() if r.get("prefix_cache_hit_rate") is not None]
    predicted = [r["predicted_prefix_hit_rate"] for r in replicas_after.values()
                 if r.get("predicted_prefix_hit_rate") is not None]
    return {"hit_rate": sum(rates) / len(rates) if rates else None,
            "predicted": sum(predicted) / len(predicted) if predicted else None,
            "source": "replicas' prefix_cache_hit_rate after the run (since engine start)"}


# ---- goals ----------------------------------------------------------------------------------------
def _p(entry: Mapping[str, Any], q: float) -> float | None:
    return percentile(entry["ttfts_s"], q)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def mode_table(parts: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each routing mode's headline figures side by side (approximate routing reported beside the goals)."""
    table = {}
    for mode, part in parts.items():
        shared, none = part["shared_prefix"], part["no_prefix"]
        table[mode] = {"shared_ttft_p90_s": _rounded(_p(shared, 90), 4),
                       "shared_output_tps": _rounded(shared["overall"]["output_token_throughput_tps"], 1),
                       "shared_hit_rate": (shared.get("measured_prefix_hit_rate") or {}).get("hit_rate"),
                       "shared_ideal_hit_rate": shared["ideal_prefix_hit_rate"],
                       "no_prefix_ttft_p99_s": _rounded(_p(none, 99), 4),
                       "no_prefix_output_tps": _rounded(none["overall"]["output_token_throughput_tps"], 1)}
    return table


def routing_goals(parts: Mapping[str, Mapping[str, Any]], mode: str = PRECISE) -> list[dict]:
    """Issue 17's routing goals for `mode` against the load-only baseline."""
    if BASELINE not in parts or mode not in parts:
        missing = [m for m in (BASELINE, mode) if m not in parts]
        return [goal(f"routing parts measured ({', '.join(missing)} missing)", False, True, False)]
    base, ours = parts[BASELINE], parts[mode]
    ttft_gain = _ratio(_p(base["shared_prefix"], 90), _p(ours["shared_prefix"], 90))
    tps_gain = _ratio(ours["shared_prefix"]["overall"]["output_token_throughput_tps"],
                      base["shared_prefix"]["overall"]["output_token_throughput_tps"])
    hit = (ours["shared_prefix"].get("measured_prefix_hit_rate") or {}).get("hit_rate")
    of_ideal = _ratio(hit, ours["shared_prefix"]["ideal_prefix_hit_rate"])
    none_tps = _ratio(ours["no_prefix"]["overall"]["output_token_throughput_tps"],
                      base["no_prefix"]["overall"]["output_token_throughput_tps"])
    none_p99 = _ratio(_p(ours["no_prefix"], 99), _p(base["no_prefix"], 99))
    met = lambda value, test: value is not None and test(value)  # noqa: E731
    return [
        goal(f"shared prefixes: {mode} P90 TTFT at least {TTFT_P90_IMPROVEMENT_GOAL:g}x lower than {BASELINE}'s "
             f"(baseline p90 / {mode} p90)", _rounded(ttft_gain), f">= {TTFT_P90_IMPROVEMENT_GOAL:g}",
             met(ttft_gain, lambda v: v >= TTFT_P90_IMPROVEMENT_GOAL)),
        goal(f"shared prefixes: {mode} output tok/s at least {THROUGHPUT_IMPROVEMENT_GOAL:g}x {BASELINE}'s",
             _rounded(tps_gain), f">= {THROUGHPUT_IMPROVEMENT_GOAL:g}",
             met(tps_gain, lambda v: v >= THROUGHPUT_IMPROVEMENT_GOAL)),
        goal(f"shared prefixes: {mode} prefix-cache hit rate at least {HIT_RATE_OF_IDEAL_GOAL:g}x the workload's "
             "ideal (measured / ideal)", _rounded(of_ideal), f">= {HIT_RATE_OF_IDEAL_GOAL:g}",
             met(of_ideal, lambda v: v >= HIT_RATE_OF_IDEAL_GOAL)),
        goal(f"no shared prefixes: {mode} output tok/s within {NO_PREFIX_TOLERANCE:.0%} of {BASELINE}'s "
             f"({mode} / baseline)", _rounded(none_tps, 4), f">= {1 - NO_PREFIX_TOLERANCE:g}",
             met(none_tps, lambda v: v >= 1 - NO_PREFIX_TOLERANCE)),
        goal(f"no shared prefixes: {mode} TTFT p99 within {NO_PREFIX_TOLERANCE:.0%} of {BASELINE}'s "
             f"({mode} / baseline)", _rounded(none_p99, 4), f"<= {1 + NO_PREFIX_TOLERANCE:g}",
             met(none_p99, lambda v: v <= 1 + NO_PREFIX_TOLERANCE)),
    ]


def fairness_goals(part: Mapping[str, Any]) -> list[dict]:
    """The light tenant's goodput under a 10x heavier one vs alone; weights 2:1 -> service 2:1."""
    light = part["contended"]["tenants"].get("light", {}).get("goodput_in_window_rps")
    alone = part["light_alone"]["tenants"].get("light", {}).get("goodput_in_window_rps")
    of_alone = _ratio(light, alone)
    served = part["weighted"]["served_tokens_in_window"]
    service_ratio = _ratio(served.get("gold"), served.get("silver"))
    weights = FAIRNESS_TENANTS["gold"] / FAIRNESS_TENANTS["silver"]
    error = None if service_ratio is None else abs(service_ratio / weights - 1)
    return [
        goal(f"fairness, one replica at 2x capacity, {HEAVY_TO_LIGHT:g}:1 demand: light tenant's goodput at least "
             f"{LIGHT_GOODPUT_OF_ALONE_GOAL:g}x its goodput alone", _rounded(of_alone),
             f">= {LIGHT_GOODPUT_OF_ALONE_GOAL:g}", of_alone is not None and of_alone >= LIGHT_GOODPUT_OF_ALONE_GOAL),
        goal(f"fairness: weights {weights:g}:1 under equal demand give {weights:g}:1 service within "
             f"{WEIGHT_RATIO_TOLERANCE:.0%} (output tokens served while both had demand, gold / silver)",
             _rounded(service_ratio), f"{weights * (1 - WEIGHT_RATIO_TOLERANCE):g}..{weights * (1 + WEIGHT_RATIO_TOLERANCE):g}",
             error is not None and error <= WEIGHT_RATIO_TOLERANCE + 1e-12),
    ]


def summary(routing_parts: Mapping[str, Mapping[str, Any]], fairness: Mapping[str, Any] | None,
            commands: Sequence[str], gpu: str) -> dict[str, Any]:
    goals = routing_goals(routing_parts)
    goals += fairness_goals(fairness) if fairness else [goal("fairness part measured", False, True, False)]
    cross = next((p["cross_check"] for p in routing_parts.values() if p.get("cross_check")), None)
    return {"gpu": gpu, "commands": list(commands), "routing_modes": mode_table(routing_parts),
            # The host has a GPU per replica; both replicas on one GPU share its compute.
            "replicas_share_one_gpu": any(p.get("replicas_share_one_gpu") for p in routing_parts.values()),
            "vllm_bench_prefix_repetition": cross, "goals": goals}


# ---- our app's config for each part -----------------------------------------------------------------
MAX_MODEL_LEN = 4096
MAX_NUM_SEQS = 128
MAX_NUM_BATCHED_TOKENS = 8192
SHARED_GPU_MEMORY_UTILIZATION = 0.45  # two engines on one GPU


def _config(model_dir: Path, port: int, num_replicas: int, engine_extra: dict[str, Any]) -> dict[str, Any]:
    config = ours_config(model_dir, port, OursOptions(max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS))
    config["engine"].update(max_model_len=MAX_MODEL_LEN, max_num_seqs=MAX_NUM_SEQS,
                            # Pinned limits and an explicit KV size: the controller's memory budget stays out.
                            batch_size_policy="vllm_default",
                            extra={**config["engine"]["extra"], **engine_extra})
    config["replicas"]["num_replicas"] = num_replicas
    config["priority_classes"] = [CLASS]
    config["default_priority"] = CLASS["name"]
    return config


def routing_config(model_dir: Path, port: int, mode: str, kv_cache_bytes: int,
                   share_one_gpu: bool = False) -> dict[str, Any]:
    """Two replicas (one per GPU) whose KV caches hold `kv_cache_bytes` each (vLLM's
    `kv_cache_memory_bytes`, which overrides `gpu_memory_utilization`), routing by `mode`.
    `share_one_gpu`: both on one GPU (half of it each to Ray; each engine's start-up check wants
    `gpu_memory_utilization` of the GPU free, so under half each). The KV caches, and so what routing by
    cache decides, are the same; the compute is shared, so throughput is not two GPUs'."""
    if mode not in ROUTING_MODES:
        raise ValueError(f"routing mode {mode!r} is not one of {ROUTING_MODES}")
    config = _config(model_dir, port, 2, {"kv_cache_memory_bytes": kv_cache_bytes})
    config["router"] = {"routing": mode}
    if share_one_gpu:
        config["replicas"]["num_gpus"] = 0.5
        config["engine"]["gpu_memory_utilization"] = SHARED_GPU_MEMORY_UTILIZATION
    return config


def fairness_keys() -> dict[str, str]:
    """Each fairness tenant's API key (a benchmark's own, not a secret)."""
    return {name: f"cache-routing-bench-{name}" for name in FAIRNESS_TENANTS}


def fairness_config(model_dir: Path, port: int) -> dict[str, Any]:
    """One replica; the four tenants' keys with their weights, all in the one class."""
    config = _config(model_dir, port, 1, {})
    config["auth"] = {"keys": [{"name": name, "sha256": hash_api_key(key), "weight": FAIRNESS_TENANTS[name]}
                               for name, key in fairness_keys().items()]}
    return config
