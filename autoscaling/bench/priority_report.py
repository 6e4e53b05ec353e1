"""The priority benchmark's verdicts and tables: goals per server, two partial runs merged side by
side, a compact text table. Pure: takes and returns the dicts priority_vs_vllm.py writes."""
from __future__ import annotations

from autoscaling.bench.result_summaries import concurrent_output_tok_s

# The goals for the mixed run.
HIGH_TTFT_P99_GOAL_MS = 250.0
SERVED_VS_SATURATED_GOAL = 0.9
# Failure kinds (result_summaries.error_kind) that are a clean refusal rather than a broken request.
REFUSALS = ("429", "503")


def goal_checks(run: dict) -> dict:
    """Each goal of one server's mixed run: True, False, or None where the run cannot tell."""
    classes = run["mix"]["classes"]
    high, low = classes["high"], classes["low"]
    high_p99 = high.get("ttft_p99_ms")
    ratio = run["mix"].get("served_vs_saturated")
    low_kinds = low.get("failed_by_kind")
    return {
        "high_ttft_p99_ok": None if high_p99 is None else high_p99 <= HIGH_TTFT_P99_GOAL_MS,
        "high_all_served": None if high.get("completed") is None else high["failed"] == 0,
        "low_failures_are_refusals": None if low_kinds is None else
        all(count == 0 for kind, count in low_kinds.items() if kind not in REFUSALS),
        "none_hanging": not any(c["process"]["timed_out"] for c in classes.values()),
        "throughput_ok": None if ratio is None else ratio >= SERVED_VS_SATURATED_GOAL,
    }


def mix_served_tok_s(mix: dict) -> float | None:
    """Output tokens/s of all classes over the longest of their runs (they ran at the same time)."""
    if mix.get("served_output_tok_s") is not None:
        return mix["served_output_tok_s"]
    classes = list(mix.get("classes", {}).values())
    if not classes or any(c.get("total_output_tokens") is None or not c.get("duration_s") for c in classes):
        return None
    return concurrent_output_tok_s([c["total_output_tokens"] for c in classes], [c["duration_s"] for c in classes])[1]


def with_engine_reference(run: dict, engine_saturated_tok_s: float | None) -> dict:
    """A run without its own saturated reference (--skip-saturated) measured against bare vLLM's,
    the engine's saturated throughput, from the run it is merged with."""
    mix = run.get("mix")
    if not mix or mix.get("served_vs_saturated") is not None or not engine_saturated_tok_s:
        return run
    served = mix_served_tok_s(mix)
    if served is None:
        return run
    return {**run, "mix": {**mix, "served_output_tok_s": served, "saturated_output_tok_s": engine_saturated_tok_s,
                           "served_vs_saturated": served / engine_saturated_tok_s,
                           "saturated_reference": "vllm serve's saturated run (merged)"}}


def merge_runs(runs: list[dict]) -> dict:
    """One report from the partial JSONs of separate runs (one per server), keyed by server."""
    by_server = {run["server"]: run for run in runs}
    engine_saturated = by_server.get("vllm", {}).get("saturated", {}).get("summary", {}).get("output_tok_s")
    by_server = {name: with_engine_reference(run, engine_saturated) for name, run in by_server.items()}
    first = runs[0]
    return {"benchmark": "priority_vs_vllm", "gpu": first.get("gpu"), "shape": first.get("shape"),
            "load": first.get("load"), "goals": {"high_ttft_p99_ms": HIGH_TTFT_P99_GOAL_MS,
                                                  "served_vs_saturated": SERVED_VS_SATURATED_GOAL},
            "verdicts": {name: goal_checks(run) for name, run in by_server.items() if "mix" in run},
            "ours_mix_vs_vllm_saturated": ours_mix_vs_vllm_saturated(by_server, engine_saturated),
            "scripts": {name: run.get("script") for name, run in by_server.items()},
            "servers": by_server}


def ours_mix_vs_vllm_saturated(by_server: dict, vllm_saturated_tok_s: float | None) -> float | None:
    """Our mix's served tokens/s against bare vLLM's saturated figure: our own reference goes through
    our admission control, which may refuse part of a burst of 512, so it can understate the engine."""
    served = by_server.get("ours", {}).get("mix", {}).get("served_output_tok_s")
    return served / vllm_saturated_tok_s if served and vllm_saturated_tok_s else None


TABLE_HEADERS = ("server", "class", "done/sent", "429", "503", "other", "TTFT p50", "p90", "p99",
                 "TPOT", "out tok/s", "in SLO", "drain s")


def class_rows(report: dict) -> list[tuple[str, ...]]:
    rows = []
    for server, run in report["servers"].items():
        for name, c in run.get("mix", {}).get("classes", {}).items():
            kinds = c.get("failed_by_kind") or {}
            other = c["failed"] - kinds.get("429", 0) - kinds.get("503", 0) if kinds else c.get("failed")
            rows.append((server, name, f"{_num(c.get('completed'))}/{_num(c.get('num_prompts'))}",
                         _num(kinds.get("429")), _num(kinds.get("503")), _num(other),
                         _num(c.get("ttft_p50_ms")), _num(c.get("ttft_p90_ms")), _num(c.get("ttft_p99_ms")),
                         _num(c.get("tpot_mean_ms")), _num(c.get("output_tok_s")),
                         _share(c.get("slo_attainment")),
                         "HUNG" if c["process"]["timed_out"] else _num(c.get("drain_after_last_arrival_s"), 1)))
    return rows


THROUGHPUT_HEADERS = ("server", "saturated tok/s", "mix served tok/s", "ratio", "high p99 ok", "all ok")


def throughput_rows(report: dict) -> list[tuple[str, ...]]:
    rows = []
    for server, run in report["servers"].items():
        mix = run.get("mix", {})
        verdict = report["verdicts"].get(server, {})
        rows.append((server, _num(run.get("saturated", {}).get("summary", {}).get("output_tok_s")),
                     _num(mix.get("served_output_tok_s")), _num(mix.get("served_vs_saturated"), 3),
                     str(verdict.get("high_ttft_p99_ok")), str(all(verdict.values()) if verdict else None)))
    return rows


PHASE_HEADERS = ("server", "high TTFT while low was", "n", "p50", "p90", "p99")


def phase_rows(report: dict) -> list[tuple[str, ...]]:
    """High-priority TTFT by the low flood's phase (before / arriving / draining / after)."""
    rows = []
    for server, run in report["servers"].items():
        for phase, figures in (run.get("mix", {}).get("high_ttft_by_low_phase") or {}).items():
            rows.append((server, phase, _num(figures["count"]), _num(figures["ttft_p50_ms"]),
                         _num(figures["ttft_p90_ms"]), _num(figures["ttft_p99_ms"])))
    return rows


TIMELINE_HEADERS = ("t (s)", "phase", "queued", "running", "window", "high TTFT ingress p50/p99 ms",
                    "replica p50/p99 ms", "GC max ms ingress/router")


def timeline_rows(timeline: list[dict]) -> list[tuple[str, ...]]:
    """Router-stats snapshots (result_summaries.stats_timeline): where high-priority first tokens waited."""
    return [(f"{row['t_s']:g}", row["phase"] or "-", _num(row["queue_depth"]), _num(row["running"]),
             "/".join(_num(w) for w in row["windows"]) or "-",
             f"{_num(row['ingress_ttft_p50_ms'])} / {_num(row['ingress_ttft_p99_ms'])}",
             f"{_num(row['replica_ttft_p50_ms'])} / {_num(row['replica_ttft_p99_ms'])}",
             f"{_num(row.get('ingress_gc_max_ms'))} / {_num(row.get('router_gc_max_ms'))}") for row in timeline]


def format_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = [headers, *rows]
    return "\n".join("  ".join(str(cell).rjust(width) for cell, width in zip(line, widths)) for line in lines)


def _num(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _share(value) -> str:
    return "-" if value is None else f"{value:.0%}"
