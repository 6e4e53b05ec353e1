"""The goals against `vllm serve` (autoscaling/bench/vs_vllm_goals.py), one set for every recipe."""
from __future__ import annotations

import pytest

from autoscaling.bench import vs_vllm_goals as goals


def point(median_ttft=40.0, p99_ttft=60.0, p99_tpot=20.0, completed=100, output_throughput=1000.0) -> dict:
    return {"completed": completed, "median_ttft_ms": median_ttft, "p99_ttft_ms": p99_ttft,
            "p99_tpot_ms": p99_tpot, "output_throughput": output_throughput}


def test_latency_goals_compare_ours_with_vllm_serve():
    met = goals.latency_goals("poisson_50", point(median_ttft=49.0, p99_ttft=65.0, p99_tpot=21.0), point())
    assert [(g["name"], g["measured"], g["met"]) for g in met] == [
        ("poisson_50: TTFT p50, ours - vllm serve (ms)", 9.0, True),
        ("poisson_50: TTFT p99, ours / vllm serve", 1.083, True),
        ("poisson_50: TPOT p99, ours / vllm serve", 1.05, True)]
    missed = goals.latency_goals("low rate", point(median_ttft=51.0, p99_ttft=70.0, p99_tpot=22.0), point())
    assert [g["met"] for g in missed] == [False, False, False]


def test_a_point_without_both_results_misses_its_goals():
    assert goals.latency_goals("bursty_75", None, point()) == [
        {"name": "bursty_75: both benches completed", "measured": False, "goal": True, "met": False}]
    assert goals.latency_goals("x", point(completed=0), point())[0]["met"] is False


def test_throughput_goal_is_ours_over_vllm_serves_output_tokens():
    entry = goals.throughput_goal(" (mixed lengths)", point(output_throughput=985.0), point())
    assert entry == {"name": "saturated output tok/s (mixed lengths), ours / vllm serve", "measured": 0.985,
                     "goal": ">= 0.97", "met": True}
    assert goals.throughput_goal("", point(output_throughput=960.0), point())["met"] is False


def test_steady_throughput_goal_sits_beside_the_whole_runs_only_when_both_kept_detail():
    entry = goals.steady_throughput_goal(" (mixed lengths)", {"steady_output_throughput": 9689.0},
                                         {"steady_output_throughput": 9746.0})
    assert entry == {"name": "saturated output tok/s (mixed lengths), steady (tokens 10-90% of the run's), "
                             "ours / vllm serve", "measured": 0.9942, "goal": ">= 0.97", "met": True}
    assert goals.steady_throughput_goal("", {"steady_output_throughput": 9000.0},
                                        {"steady_output_throughput": 9746.0})["met"] is False
    assert goals.steady_throughput_goal("", {"steady_output_throughput": None}, {"steady_output_throughput": 1.0}) is None
    assert goals.steady_throughput_goal("", point(), point()) is None


def flood(high_p99=200.0, vllm_high_p99=400.0, failed_by_kind=None, hung=(), refused_wait=12.0, served=0.95):
    low = {"failed": sum((failed_by_kind or {"429": 30}).values()), "failed_by_kind": failed_by_kind or {"429": 30}}
    return {"ours": {"high": {"ttft_p99_ms": high_p99}, "low": low, "hung": list(hung), "served_vs_saturated": served},
            "vllm": {"high": {"ttft_p99_ms": vllm_high_p99}, "low": {}},
            "classes": {"low": {"queue_deadline_s": 15.0}},
            "router_stats": {"classes": {"low": {"refused_wait_max_s": refused_wait}}}}


def test_flood_goals():
    assert [g["met"] for g in goals.flood_goals(flood())] == [True, True, True, True, True]
    missed = goals.flood_goals(flood(high_p99=300.0, failed_by_kind={"429": 3, "timeout": 1}, refused_wait=16.0,
                                     served=0.8))
    assert [g["met"] for g in missed] == [False, False, False, False, False]
    assert missed[1]["measured"] == pytest.approx(0.75)
    assert missed[2]["measured"] == {"hung": [], "other_failures": 1}


def test_flood_goals_name_the_benches_that_did_not_finish():
    section = flood()
    del section["vllm"]["high"]
    assert goals.flood_goals(section) == [{"name": "flood: every bench completed", "measured": {"failed": ["vllm high"]},
                                           "goal": "all", "met": False}]
    del section["ours"]["low"]
    assert goals.flood_goals(section)[0]["measured"] == {"failed": ["ours low", "vllm high"]}


def test_flood_goals_need_vllms_high_class_alone():
    section = flood()
    del section["vllm"]["low"]
    assert [g["met"] for g in goals.flood_goals(section)] == [True, True, True, True, True]
