"""Figures taken from the JSON that `vllm bench serve --save-result` writes. Pure: no I/O.

Keys as vLLM's `vllm/benchmarks/serve.py` saves them: always `completed`, `failed`, `duration`,
`num_prompts`, `request_rate` ("inf" or a number), `total_output_tokens`, `output_throughput`,
`request_goodput` (None without --goodput) and `p{N}_{metric}_ms` / `mean_{metric}_ms` for the
--percentile-metrics and --metric-percentiles asked; with --save-detailed also per-request lists
`output_lens` (0 for a failed request), `ttfts` (seconds) and `errors` ("" when it succeeded).
"""
from __future__ import annotations

import math

from serve_app.memory.batch_profile import SweepPoint
from serve_app.statistics import percentile

# vLLM's request function stores `response.reason` for a non-200 answer: the HTTP reason phrase.
_REASONS = {"Too Many Requests": "429", "Service Unavailable": "503"}


def error_kind(error: str) -> str:
    """'429', '503', 'no_tokens' (a 200 stream that ended before a token), 'timeout' or 'other'."""
    if error in _REASONS:
        return _REASONS[error]
    if error.startswith("Never received a valid chunk"):
        return "no_tokens"
    if "TimeoutError" in error or "ServerTimeoutError" in error:
        return "timeout"
    return "other"


def error_counts(result: dict) -> dict[str, int] | None:
    """Failed requests by kind, or None when the result was saved without --save-detailed."""
    if "errors" not in result or "output_lens" not in result:
        return None
    counts = {"429": 0, "503": 0, "no_tokens": 0, "timeout": 0, "other": 0}
    for error, output_len in zip(result["errors"], result["output_lens"]):
        if output_len == 0:
            counts[error_kind(error or "")] += 1
    return counts


def arrival_window_s(result: dict) -> float | None:
    """Seconds from the first to the last arrival: vLLM rescales its Poisson gaps so the last
    request is sent exactly num_prompts / request_rate after the start. None at rate inf."""
    rate = result.get("request_rate")
    if rate in (None, "inf") or math.isinf(float(rate)):
        return None
    return result["num_prompts"] / float(rate)


def drain_after_last_arrival_s(result: dict) -> float | None:
    """How long the benchmark ran after its last request was sent (its duration ends when the
    last request finishes or fails): the time the server took to settle the backlog."""
    window = arrival_window_s(result)
    return None if window is None else result["duration"] - window


def max_ttft_ms(result: dict) -> float | None:
    """Longest time to first token among the requests that succeeded (needs --save-detailed)."""
    if "ttfts" not in result or "output_lens" not in result:
        return None
    served = [ttft for ttft, n in zip(result["ttfts"], result["output_lens"]) if n > 0]
    return 1000 * max(served) if served else None


def slo_attainment(result: dict) -> float | None:
    """Share of all sent requests that completed within the --goodput SLOs (refused ones count as missed)."""
    goodput = result.get("request_goodput")
    if goodput is None or not result.get("num_prompts"):
        return None
    return round(goodput * result["duration"]) / result["num_prompts"]


def class_summary(result: dict) -> dict:
    """What one priority class's benchmark run reports: counts, TTFT percentiles, TPOT, tokens/s.
    Latencies are None when nothing completed (vLLM then reports 0 ms, which would read as fast)."""
    served = result["completed"] > 0
    latency = lambda key: result.get(key) if served else None  # noqa: E731
    return {
        "num_prompts": result.get("num_prompts"),
        "completed": result["completed"],
        "failed": result["failed"],
        "failed_by_kind": error_counts(result),
        "ttft_p50_ms": latency("p50_ttft_ms"),
        "ttft_p90_ms": latency("p90_ttft_ms"),
        "ttft_p99_ms": latency("p99_ttft_ms"),
        "ttft_max_ms": max_ttft_ms(result),
        "tpot_mean_ms": latency("mean_tpot_ms"),
        "output_tok_s": result.get("output_throughput"),
        "total_output_tokens": result.get("total_output_tokens"),
        "duration_s": result["duration"],
        "drain_after_last_arrival_s": drain_after_last_arrival_s(result),
        "slo_attainment": slo_attainment(result),
    }


def concurrent_output_tok_s(output_tokens: list[int], durations_s: list[float]) -> tuple[float, float]:
    """(window, tokens/s): output tokens of classes that ran at the same time, over the longest run."""
    window = max(durations_s)
    return window, sum(output_tokens) / window


def steady_output_tok_s(result: dict, middle: tuple[float, float] = (0.1, 0.9)) -> float | None:
    """Output tokens/s while the run was in full swing: the tokens delivered between the `middle` shares
    of all its tokens, over the time between them. A whole run's tokens/s also counts its ramp and its
    drain, which weigh more the shorter the run: on one H200 our saturated burst (a third of it refused
    at the class's deadline) lasted 13 s against `vllm serve`'s 23 s, 0.94x whole, 0.994x steady.
    Each request's tokens are taken as evenly spread between its first and its last (a coalesced stream
    sends fewer, larger events). None without `vllm bench serve --save-detailed`'s per-request lists."""
    if not all(key in result for key in ("start_times", "ttfts", "itls", "output_lens")):
        return None
    times: list[float] = []
    for start, ttft, gaps, output_len in zip(result["start_times"], result["ttfts"], result["itls"],
                                             result["output_lens"]):
        if not output_len or not ttft:
            continue
        first = start + ttft
        span = sum(gaps)
        times += [first + span * k / (output_len - 1) for k in range(output_len)] if output_len > 1 else [first]
    times.sort()
    lo, hi = (round(share * (len(times) - 1)) for share in middle)
    if hi <= lo or times[hi] <= times[lo]:
        return None
    return (hi - lo) / (times[hi] - times[lo])


def throughput_vs_saturated(class_results: list[dict], saturated: dict) -> dict:
    """Output tokens of all classes over the longest of their runs (they ran at the same time),
    against the saturated reference run's output tokens/s."""
    window, served = concurrent_output_tok_s([r["total_output_tokens"] for r in class_results],
                                             [r["duration"] for r in class_results])
    return {"window_s": window, "served_output_tok_s": served,
            "saturated_output_tok_s": saturated["output_throughput"],
            "served_vs_saturated": served / saturated["output_throughput"]}


def sweep_point(batch_size: int, result: dict, peak_kv_cache_usage: float, preemptions: int) -> SweepPoint:
    """One batch size of the sweep from a run at --max-concurrency batch_size (ms become seconds)."""
    return SweepPoint(batch_size=batch_size, output_tokens_per_s=result["output_throughput"],
                      ttft_p99_s=result["p99_ttft_ms"] / 1000, tpot_p99_s=result["p99_tpot_ms"] / 1000,
                      request_latency_p99_s=result["p99_e2el_ms"] / 1000,
                      peak_kv_cache_usage=peak_kv_cache_usage, preemptions=preemptions)


def prompts_for_batch(batch_size: int) -> int:
    """Two rounds of the batch, at least 8 requests: enough for a p99 without stretching the sweep."""
    return max(2 * batch_size, 8)


def _percentiles_ms(seconds: list[float]) -> dict:
    def ms(q: float) -> float | None:
        value = percentile(seconds, q)
        return None if value is None else 1000 * value

    return {"count": len(seconds), "ttft_p50_ms": ms(50), "ttft_p90_ms": ms(90), "ttft_p99_ms": ms(99)}


def paired_ttft_differences_s(ours: dict, reference: dict) -> list[float] | None:
    """Request by request, ours' TTFT minus the reference's (seconds), for two benches of the same seed (the same
    prompts at the same arrival offsets, so each pair met the same load), over the pairs both served. None when
    the runs are not paired (other prompts) or carry no per-request detail."""
    if not ours.get("ttfts") or ours.get("input_lens") != reference.get("input_lens"):
        return None
    return [a - b for a, b, ok_a, ok_b in zip(ours["ttfts"], reference["ttfts"], ours["output_lens"],
                                              reference["output_lens"]) if ok_a and ok_b]


def paired_ttft_difference_ms(ours: dict, reference: dict) -> dict | None:
    """`paired_ttft_differences_s`' p10 / p50 / p90 / p99 / max in ms. A gap that every request pays moves p10;
    one that some requests pay moves only the top."""
    differences = [1000 * d for d in paired_ttft_differences_s(ours, reference) or []]
    if not differences:
        return None
    return {"pairs": len(differences), **{f"p{q}": round(percentile(differences, q), 2) for q in (10, 50, 90, 99)},
            "max": round(max(differences), 2)}


def flood_phases(flood: dict):
    """`phase_of(t)` for a time on vLLM bench's clock (time.perf_counter, i.e. time.monotonic on
    Linux): `before` the flood's first arrival, `arriving`, `draining` (until its run ended),
    `after`; and the first arrival's time. The flood run needs --save-detailed."""
    flood_starts = flood["start_times"]
    first_arrival, last_arrival = min(flood_starts), max(flood_starts)
    flood_end = first_arrival + flood["duration"]

    def phase_of(t: float) -> str:
        return ("before" if t < first_arrival else "arriving" if t <= last_arrival
                else "draining" if t <= flood_end else "after")

    return phase_of, first_arrival


def ttft_by_flood_phase(result: dict, flood: dict) -> dict | None:
    """A class's TTFT percentiles split by where each of its requests started in another class's
    flood (`flood_phases`). Both runs need --save-detailed and one machine's clock. Served requests
    only."""
    if not all("start_times" in r and "ttfts" in r and "output_lens" in r for r in (result, flood)):
        return None
    phase_of, _ = flood_phases(flood)
    phases: dict[str, list[float]] = {"before": [], "arriving": [], "draining": [], "after": []}
    for start, ttft, output_len in zip(result["start_times"], result["ttfts"], result["output_lens"]):
        if output_len == 0:
            continue
        phases[phase_of(start)].append(ttft)
    return {phase: _percentiles_ms(ttfts) for phase, ttfts in phases.items()}


def stats_timeline(samples: list[tuple[float, dict]], flood: dict | None, class_name: str) -> list[dict]:
    """Router-stats snapshots polled during a run (time.monotonic, stats) as rows: seconds since
    the flood's first arrival, its phase, queue depth, windows, and `class_name`'s recent TTFT p50/p99
    in ms at the ingress and at the replica (each over the server's last ~10 s), and the longest
    garbage-collector pause of the ingress and router processes over that window. Without the flood's
    detailed run, times count from the first snapshot and the phase is unknown."""
    if flood is not None and "start_times" in flood:
        phase_of, origin = flood_phases(flood)
    else:
        origin = samples[0][0] if samples else 0.0
        phase_of = lambda t: None  # noqa: E731

    def ms(summary: dict | None, key: str) -> float | None:
        value = (summary or {}).get(key)
        return None if value is None else round(1000 * value, 1)

    def gc_max_ms(pauses: dict | None) -> float | None:
        """Longest garbage-collector pause of any generation in the server's recent window."""
        longest = [recent["max_s"] for summary in (pauses or {}).values()
                   if (recent := summary.get("recent")) and recent.get("max_s") is not None]
        return round(1000 * max(longest), 1) if longest else None

    rows = []
    for t, stats in samples:
        ingress = ((stats.get("ingress") or {}).get("ttft_recent") or {}).get(class_name)
        replica = (stats.get("replica_ttft_recent") or {}).get(class_name)
        rows.append({"t_s": round(t - origin, 1), "phase": phase_of(t), "queue_depth": stats.get("queue_depth"),
                     "running": stats.get("running"),
                     "windows": [r.get("window") for r in (stats.get("replicas") or {}).values()],
                     "ingress_ttft_p50_ms": ms(ingress, "p50_s"), "ingress_ttft_p99_ms": ms(ingress, "p99_s"),
                     "replica_ttft_p50_ms": ms(replica, "p50_s"), "replica_ttft_p99_ms": ms(replica, "p99_s"),
                     "ingress_gc_max_ms": gc_max_ms((stats.get("ingress") or {}).get("gc_pauses")),
                     "router_gc_max_ms": gc_max_ms(stats.get("router_gc_pauses"))})
    return rows
