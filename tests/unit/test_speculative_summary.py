"""The speculative decoding benchmark's verdicts from synthetic run files."""
from __future__ import annotations

import pytest

from autoscaling.bench.speculative_summary import acceptance_goal, acceptance_rate, same_outputs_goal, summarize, tpot_ms


def run(mode: str, texts: dict[str, str], p50: float | None = 20.0, p99: float | None = 30.0,
        spec: dict | None = None) -> dict:
    return {"mode": mode, "texts": texts, "bench": {"median_tpot_ms": p50, "p99_tpot_ms": p99}, "spec": spec,
            "server_command": f"llmserve run {mode}", "bench_command": f"vllm bench {mode}", "recipe": "recipe"}


def test_same_outputs_needs_every_shared_prompt_identical():
    plain = run("plain", {"a": "x y", "b": "z"})
    assert same_outputs_goal(plain, run("ngram", {"a": "x y", "b": "z"}))["met"]
    differing = same_outputs_goal(plain, run("ngram", {"a": "x y", "b": "w"}))
    assert (differing["met"], differing["measured"], differing["differing_prompts"]) == (False, "1 of 2 identical", ["b"])


def test_same_outputs_is_unmet_without_both_runs():
    assert not same_outputs_goal(run("plain", {"a": "x"}), None)["met"]
    assert not same_outputs_goal(None, None)["met"]


def test_acceptance_and_tpot_are_reported_side_by_side():
    goal = acceptance_goal(run("plain", {}, 20.0, 30.0),
                           run("ngram", {}, 22.0, 27.0, spec={"drafted": 400, "accepted": 30}))
    measured = goal["measured"]
    assert goal["met"]
    assert measured["acceptance_rate"] == pytest.approx(30 / 400)
    assert measured["tpot_p50_ms"] == {"plain": 20.0, "ngram": 22.0}
    assert measured["tpot_p50_ngram_over_plain"] == pytest.approx(1.1)
    assert measured["tpot_p99_ngram_over_plain"] == pytest.approx(0.9)
    assert "random weights" in goal["note"]


def test_a_low_acceptance_rate_still_counts_as_reported_but_a_missing_one_does_not():
    nothing_accepted = acceptance_goal(run("plain", {}), run("ngram", {}, spec={"drafted": 10, "accepted": 0}))
    assert nothing_accepted["met"] and nothing_accepted["measured"]["acceptance_rate"] == 0
    assert not acceptance_goal(run("plain", {}), run("ngram", {}, spec=None))["met"]
    assert not acceptance_goal(run("plain", {}, p99=None), run("ngram", {}, spec={"drafted": 1, "accepted": 1}))["met"]
    assert acceptance_rate({"drafted": 0, "accepted": 0}) is None


def test_tpot_reads_the_median_for_p50():
    assert tpot_ms({"median_tpot_ms": 12.5}, "p50") == 12.5
    assert tpot_ms({"p50_tpot_ms": 11.0, "median_tpot_ms": 12.5}, "p50") == 11.0
    assert tpot_ms(None, "p99") is None


def test_summary_shape():
    runs = {"plain": run("plain", {"a": "x"}), "ngram": run("ngram", {"a": "x"}, spec={"drafted": 8, "accepted": 2})}
    summary = summarize(runs, "NVIDIA H200, 143771 MiB")
    assert set(summary) == {"gpu", "commands", "goals"}
    assert summary["commands"] == ["llmserve run plain", "vllm bench plain", "llmserve run ngram", "vllm bench ngram",
                                   "recipe"]
    assert [g["met"] for g in summary["goals"]] == [True, True]
    assert all({"name", "measured", "goal", "met"} <= set(g) for g in summary["goals"])


def test_no_drafts_under_the_load_is_reported_beside_the_greedy_prompts_drafts():
    ngram = run("ngram", {}, 6.4, 9.6, spec={"drafted": 0, "accepted": 0})
    ngram.update(spec_greedy={"drafted": 177, "accepted": 172}, engine_warnings=["Async scheduling not supported"])
    goal = acceptance_goal(run("plain", {}, 3.8, 4.0), ngram)
    measured = goal["measured"]
    assert goal["met"]
    assert (measured["drafted_tokens"], measured["acceptance_rate"]) == (0, None)
    assert measured["greedy_prompts"]["acceptance_rate"] == pytest.approx(172 / 177)
    assert measured["engine_warnings"] == ["Async scheduling not supported"]
    assert measured["tpot_p50_ngram_over_plain"] == pytest.approx(6.4 / 3.8)
