"""The speculative decoding benchmark's verdicts (benchmarks/speculative_h200.py), from its per-mode
run files: greedy outputs the same with and without speculation, and the acceptance rate and TPOT
reported side by side. Pure: run dicts in, summary out."""
from __future__ import annotations

from typing import Any

PLAIN, NGRAM = "plain", "ngram"
RANDOM_WEIGHTS_NOTE = ("synthetic checkpoint with random weights: its outputs do not continue the prompt the way "
                       "text does, so n-gram drafts match rarely; the acceptance rate and TPOT here are what this "
                       "model gives, not what a trained model would")


def tpot_ms(bench: dict | None, percentile: str) -> float | None:
    """`vllm bench serve`'s TPOT at `percentile` ("p50" also read as its `median_tpot_ms`)."""
    if not bench:
        return None
    value = bench.get(f"{percentile}_tpot_ms")
    if value is None and percentile == "p50":
        value = bench.get("median_tpot_ms")
    return value


def acceptance_rate(spec: dict | None) -> float | None:
    """Accepted / drafted tokens over the measured load; None when nothing was drafted or read."""
    if not spec or not spec.get("drafted"):
        return None
    return spec["accepted"] / spec["drafted"]


def same_outputs_goal(plain: dict | None, ngram: dict | None) -> dict[str, Any]:
    plain_texts = (plain or {}).get("texts", {})
    ngram_texts = (ngram or {}).get("texts", {})
    prompts = sorted(set(plain_texts) & set(ngram_texts))
    differing = [p for p in prompts if plain_texts[p] != ngram_texts[p]]
    return {"name": "same outputs at temperature 0 (greedy completions of the same prompts, n-gram speculation "
                    "vs none)",
            "measured": f"{len(prompts) - len(differing)} of {len(prompts)} identical",
            "differing_prompts": differing, "goal": "all identical",
            "met": bool(prompts) and not differing}


def acceptance_goal(plain: dict | None, ngram: dict | None) -> dict[str, Any]:
    """The load's drafts (`spec`) and, where recorded, the greedy prompts' (`spec_greedy`: three of them repeat
    themselves, so n-gram lookup has matches there). Zero drafts under the load is a result, not a gap: random
    prompt tokens give the lookup nothing to match; what is missing is a counter that was never read."""
    plain_bench, ngram_bench = (plain or {}).get("bench"), (ngram or {}).get("bench")
    spec = (ngram or {}).get("spec") or {}
    greedy = (ngram or {}).get("spec_greedy") or {}
    tpot = {p: {PLAIN: tpot_ms(plain_bench, p), NGRAM: tpot_ms(ngram_bench, p)} for p in ("p50", "p99")}
    measured = {"acceptance_rate": acceptance_rate(spec), "drafted_tokens": spec.get("drafted"),
                "accepted_tokens": spec.get("accepted"),
                "greedy_prompts": {"acceptance_rate": acceptance_rate(greedy), "drafted_tokens": greedy.get("drafted"),
                                   "accepted_tokens": greedy.get("accepted")},
                "tpot_p50_ms": tpot["p50"], "tpot_p99_ms": tpot["p99"],
                "tpot_p50_ngram_over_plain": _ratio(tpot["p50"][NGRAM], tpot["p50"][PLAIN]),
                "tpot_p99_ngram_over_plain": _ratio(tpot["p99"][NGRAM], tpot["p99"][PLAIN]),
                "engine_warnings": (ngram or {}).get("engine_warnings", [])}
    counted = spec.get("drafted") is not None and spec.get("accepted") is not None
    reported = counted and all(v is not None for by_mode in tpot.values() for v in by_mode.values())
    return {"name": "n-gram acceptance rate and its effect on TPOT reported", "measured": measured,
            "goal": "reported honestly (measured present, whatever it is)", "met": reported,
            "note": RANDOM_WEIGHTS_NOTE}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(runs: dict[str, dict], gpu: str) -> dict[str, Any]:
    """summary.json from the run of each mode ("plain", "ngram"); a missing mode leaves its goals unmet."""
    plain, ngram = runs.get(PLAIN), runs.get(NGRAM)
    commands = [c for run in runs.values() for c in (run.get("server_command"), run.get("bench_command")) if c]
    commands += sorted({run["recipe"] for run in runs.values() if run.get("recipe")})
    return {"gpu": gpu, "commands": commands, "goals": [same_outputs_goal(plain, ngram), acceptance_goal(plain, ngram)]}
