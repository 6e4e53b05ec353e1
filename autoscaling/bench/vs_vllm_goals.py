"""The goals our app is measured against `vllm serve` by, each as a summary.json entry: name, what
was measured, the goal, met or not. One set of thresholds for every recipe that checks them. Pure."""
from __future__ import annotations

from autoscaling.bench.priority_report import HIGH_TTFT_P99_GOAL_MS, REFUSALS, SERVED_VS_SATURATED_GOAL

# The latency issue's goals (issue 16), at every load point: our path's cost on a first token and
# on every later one, over `vllm serve`'s on the same GPU model at the same time.
TTFT_P50_EXTRA_GOAL_MS = 10.0
TTFT_P99_RATIO_GOAL = 1.1
TPOT_P99_RATIO_GOAL = 1.05
# Saturated output tokens/s, ours over `vllm serve`'s.
THROUGHPUT_RATIO_GOAL = 0.97
# Under the priority flood our high class's TTFT p99 over `vllm serve --scheduling-policy priority`'s.
FLOOD_HIGH_P99_RATIO_GOAL = 0.6


def goal(name: str, measured, target: str, met: bool) -> dict:
    return {"name": name, "measured": measured, "goal": target, "met": met}


def latency_goals(label: str, ours: dict | None, vllm: dict | None) -> list[dict]:
    """TTFT p50 / p99 and TPOT p99 of one load point (two `vllm bench serve` results, ms as vLLM saves them)."""
    if ours is None or vllm is None or not ours["completed"] or not vllm["completed"]:
        return [goal(f"{label}: both benches completed", False, True, False)]
    p50_extra = ours["median_ttft_ms"] - vllm["median_ttft_ms"]
    p99_ratio = ours["p99_ttft_ms"] / vllm["p99_ttft_ms"]
    tpot_ratio = ours["p99_tpot_ms"] / vllm["p99_tpot_ms"]
    return [
        goal(f"{label}: TTFT p50, ours - vllm serve (ms)", round(p50_extra, 2), f"<= +{TTFT_P50_EXTRA_GOAL_MS:g} ms",
             p50_extra <= TTFT_P50_EXTRA_GOAL_MS),
        goal(f"{label}: TTFT p99, ours / vllm serve", round(p99_ratio, 3), f"<= {TTFT_P99_RATIO_GOAL:g}",
             p99_ratio <= TTFT_P99_RATIO_GOAL),
        goal(f"{label}: TPOT p99, ours / vllm serve", round(tpot_ratio, 3), f"<= {TPOT_P99_RATIO_GOAL:g}",
             tpot_ratio <= TPOT_P99_RATIO_GOAL),
    ]


def throughput_ratio(ours: dict, vllm: dict) -> float:
    return ours["output_throughput"] / vllm["output_throughput"]


def throughput_goal(label: str, ours: dict, vllm: dict) -> dict:
    """Saturated output tokens/s, ours / `vllm serve`'s (`label` says what load and how they ran)."""
    ratio = throughput_ratio(ours, vllm)
    return goal(f"saturated output tok/s{label}, ours / vllm serve", round(ratio, 4),
                f">= {THROUGHPUT_RATIO_GOAL:g}", ratio >= THROUGHPUT_RATIO_GOAL)


def steady_throughput_goal(label: str, ours: dict, vllm: dict) -> dict | None:
    """`throughput_goal` on the tokens/s while each run was in full swing (`steady_output_throughput`,
    see `result_summaries.steady_output_tok_s`), beside it: a server that refuses part of a saturated
    burst runs shorter, and its ramp and drain weigh more on the whole run's figure. None when either
    run kept no per-request detail."""
    ours_steady, vllm_steady = ours.get("steady_output_throughput"), vllm.get("steady_output_throughput")
    if ours_steady is None or vllm_steady is None:
        return None
    ratio = ours_steady / vllm_steady
    return goal(f"saturated output tok/s{label}, steady (tokens 10-90% of the run's), ours / vllm serve",
                round(ratio, 4), f">= {THROUGHPUT_RATIO_GOAL:g}", ratio >= THROUGHPUT_RATIO_GOAL)


def flood_goals(flood: dict) -> list[dict]:
    """The priority flood on both servers at once: per server the classes' `class_summary`s, `hung`
    and `served_vs_saturated`; `classes` (their SLOs) and our `router_stats`."""
    ours, vllm = flood["ours"], flood["vllm"]
    # The benches the goals read: vLLM's low class only loads its engine beside its high one (a run whose
    # machine was lost after vLLM's high class finished keeps a valid high-class p99 to compare with).
    missing = [f"{server} {name}" for server, names in (("ours", ("high", "low")), ("vllm", ("high",)))
               for name in names if name not in flood[server]]
    if missing:
        return [goal("flood: every bench completed", {"failed": missing}, "all", False)]
    high_p99, vllm_high_p99 = ours["high"]["ttft_p99_ms"], vllm["high"]["ttft_p99_ms"]
    ratio = None if None in (high_p99, vllm_high_p99) else high_p99 / vllm_high_p99
    low = ours["low"]
    unexplained = low["failed"] - sum(n for kind, n in (low.get("failed_by_kind") or {}).items() if kind in REFUSALS)
    refused_wait = ((flood.get("router_stats") or {}).get("classes") or {}).get("low", {}).get("refused_wait_max_s")
    deadline = flood["classes"]["low"]["queue_deadline_s"]
    served = ours.get("served_vs_saturated", 0)
    return [
        goal("flood: high-class TTFT p99 (ms)", high_p99, f"<= {HIGH_TTFT_P99_GOAL_MS:g}",
             high_p99 is not None and high_p99 <= HIGH_TTFT_P99_GOAL_MS),
        goal("flood: high-class TTFT p99, ours / vllm serve --scheduling-policy priority",
             None if ratio is None else round(ratio, 3), f"<= {FLOOD_HIGH_P99_RATIO_GOAL:g}",
             ratio is not None and ratio <= FLOOD_HIGH_P99_RATIO_GOAL),
        goal("flood: low requests neither hung nor failed other than 429/503",
             {"hung": ours["hung"], "other_failures": unexplained}, "none", not ours["hung"] and unexplained == 0),
        goal("flood: longest wait of a refused low request (s) within its queue deadline", refused_wait,
             f"<= {deadline}", refused_wait is not None and refused_wait <= deadline),
        goal("flood: served output tok/s / saturated", round(served, 3), f">= {SERVED_VS_SATURATED_GOAL:g}",
             served >= SERVED_VS_SATURATED_GOAL),
    ]
