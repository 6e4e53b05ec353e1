"""The controller benchmark's pure parts: plans, sweep, a run's goodput, Pareto fronts and goals, on
made-up rows."""
from __future__ import annotations

import dataclasses
import math

import pytest

from autoscaling.bench import controller_plans as bench
from autoscaling.bench import controller_runs as bench_runs
from autoscaling.loadtest.metrics import RequestRecord, Slo, class_stats
from serve_app.memory import ModelShape
from serve_app.memory.gpus import gpu_memory_bytes
from serve_app.memory.presets import get_preset
from serve_app.policy.batch_controller import DeviceInfo, plan_engine
from serve_app.synthetic_model import hf_config, shape_named

LLAMA3_8B = ModelShape.from_hf_config(hf_config(shape_named("llama3-8b")))
H200 = DeviceInfo("cuda", "NVIDIA H200", gpu_memory_bytes("H200"), gpu_memory_bytes("H200"))


def request(ttft: float | None, e2e: float | None, tokens: int | None, outcome: str = "completed") -> RequestRecord:
    return RequestRecord(0, "preset", send_s=0.0, end_s=e2e or 0.0, outcome=outcome, first_token_s=ttft,
                         token_times_s=[e2e] if e2e is not None else [], output_tokens=tokens)


def run_row(requests: list[RequestRecord], duration_s: float, ttft_slo_s: float, tpot_slo_s: float) -> dict:
    """The figures of a run the load driver judged against this SLO."""
    stats = class_stats(requests, duration_s, {"preset": Slo(ttft_slo_s, tpot_slo_s)})
    return bench.run_row(stats, duration_s)


def row(seqs: int, budget: int, goodput: float, **figures) -> dict:
    return {"max_num_seqs": seqs, "max_num_batched_tokens": budget, "goodput_rps": goodput, **figures}


# ---- plans and sweep ------------------------------------------------------------------------------
def test_the_controllers_plan_is_plan_engines_for_the_device_and_preset():
    shape = LLAMA3_8B
    plan = bench.controller_plan("memory_budget", shape, H200, get_preset("mixed"), max_model_len=8192,
                                 gpu_memory_utilization=0.9)
    direct = plan_engine(shape, H200, get_preset("mixed"), max_model_len=8192, gpu_memory_utilization=0.9,
                         max_num_batched_tokens=8192, kv_cache_dtype="auto")
    assert plan.label == "controller:memory_budget"
    assert plan.setting.to_dict() == direct.engine_args
    assert plan.predicted_kv_tokens == direct.predicted_kv_tokens
    fp8 = bench.controller_plan("memory_budget", shape, H200, get_preset("mixed"), max_model_len=8192,
                                gpu_memory_utilization=0.9, kv_cache_dtype="fp8")
    assert fp8.predicted_kv_tokens > 1.9 * plan.predicted_kv_tokens


def test_policies_are_those_the_config_accepts_without_vllms_default():
    assert "memory_budget" in bench.available_policies()
    assert bench.available_policies(["vllm_default", "memory_budget", "no_such_policy"]) == ("memory_budget",)


def test_every_available_policy_plans():
    for policy in bench.available_policies():
        plan = bench.controller_plan(policy, LLAMA3_8B, H200, get_preset("interactive"),
                                     max_model_len=8192, gpu_memory_utilization=0.9)
        assert 1 <= plan.setting.max_num_seqs <= bench.VLLM_DEFAULT_MAX_NUM_SEQS
        assert plan.setting.max_num_batched_tokens == bench.PLANNING_MAX_NUM_BATCHED_TOKENS


def test_vllm_defaults_on_an_h200():
    assert bench.vllm_default_plan().setting == bench.EngineSetting(8192, 1024)


def test_the_sweep_measures_each_plans_budget_and_8192_with_every_grid_size_and_the_plans_own():
    plans = [bench.Plan("controller:memory_budget", bench.EngineSetting(2304, 100)), bench.vllm_default_plan()]
    assert bench.sweep_budgets(plans) == [2304, 8192]
    assert bench.sweep_budgets(plans, [4096, 8192]) == [2304, 4096, 8192]
    at_plan = bench.settings_at_budget(2304, plans, grid=(64, 128))
    assert [s.max_num_seqs for s in at_plan] == [64, 100, 128]
    assert [s.max_num_seqs for s in bench.settings_at_budget(8192, plans, grid=(64, 128))] == [64, 128, 1024]
    assert bench.engine_max_num_seqs(8192, plans, grid=(64, 128)) == 1024
    assert bench.engine_max_num_seqs(8192, [plans[0]], grid=(64,)) == 100


def test_no_setting_has_more_sequences_than_its_token_budget():
    plans = [bench.vllm_default_plan()]
    assert [s.max_num_seqs for s in bench.settings_at_budget(512, plans)] == [32, 64, 128, 256, 512]
    assert bench.engine_max_num_seqs(512, plans) == 512


# ---- a run's figures --------------------------------------------------------------------------------
def test_goodput_counts_completed_requests_within_both_slos_per_second_of_the_run():
    requests = [request(0.1, 1.1, 11),   # TPOT 0.1: met
                request(0.1, 2.1, 11),   # TPOT 0.2: misses TPOT
                request(0.6, 0.6, 1),    # one token, TTFT misses
                request(0.2, 0.2, 1),    # one token: judged on TTFT alone, met
                request(None, None, None, outcome="failed")]
    figures = run_row(requests, duration_s=4.0, ttft_slo_s=0.5, tpot_slo_s=0.15)
    assert figures["goodput_rps"] == pytest.approx(2 / 4)
    assert figures["slo_attainment"] == pytest.approx(2 / 5)
    assert figures["request_throughput_rps"] == pytest.approx(4 / 4)
    assert figures["output_token_throughput_tps"] == pytest.approx(24 / 4)
    assert (figures["sent"], figures["completed"], figures["failed"]) == (5, 4, 1)
    assert figures["tpot_p99_s"] == pytest.approx(0.1 + 0.99 * 0.1)  # numpy linear, of 0.1 and 0.2
    assert figures["ttft_p50_s"] == pytest.approx(0.15)
    assert figures["slo_missed"] == {"ttft_only": pytest.approx(1 / 5), "tpot_only": pytest.approx(1 / 5), "both": 0}


def test_a_run_with_nothing_completed_has_no_latencies_and_no_goodput():
    figures = run_row([request(None, None, None, "failed")], 10.0, 0.5, 0.1)
    assert figures["goodput_rps"] == 0 and figures["ttft_p99_s"] is None


# ---- Pareto fronts ----------------------------------------------------------------------------------
def test_pareto_front_keeps_the_rows_no_other_beats_on_throughput_and_p99_ttft():
    rows = [row(32, 8192, 1, output_token_throughput_tps=100, ttft_p99_s=0.2),
            row(64, 8192, 1, output_token_throughput_tps=200, ttft_p99_s=0.3),
            row(128, 8192, 1, output_token_throughput_tps=150, ttft_p99_s=0.4),  # beaten by 64
            row(256, 8192, 1, output_token_throughput_tps=300, ttft_p99_s=0.9),
            row(512, 8192, 1, output_token_throughput_tps=300, ttft_p99_s=1.0),  # tie on x, worse y
            row(1024, 8192, 1, output_token_throughput_tps=None, ttft_p99_s=None)]
    assert [r["max_num_seqs"] for r in bench.pareto_front(rows)] == [32, 64, 256]


def test_chunked_prefill_front_minimises_both_latencies():
    rows = [{"max_num_batched_tokens": b, "prefill_ttft_p99_s": ttft, "decode_tpot_p99_s": tpot}
            for b, ttft, tpot in ((512, 3.0, 0.02), (1024, 1.5, 0.025), (2048, 1.6, 0.03), (8192, 0.5, 0.06))]
    assert [r["max_num_batched_tokens"] for r in bench.chunked_prefill_front(rows)] == [8192, 1024, 512]


# ---- goals ------------------------------------------------------------------------------------------
PLANS = [{"label": "controller:memory_budget", "max_num_seqs": 64, "max_num_batched_tokens": 2304},
         {"label": "vllm_default", "max_num_seqs": 1024, "max_num_batched_tokens": 8192}]


NEAR_CAPACITY = {"rate_rps": 9.0, "capacity": {"steady_request_rps": 10.0}}


def goals_for(ours: float, best: float, default: float, **part) -> list[dict]:
    rows = [row(64, 2304, ours), row(256, 2304, best), row(1024, 8192, default), row(32, 8192, 0.1)]
    return bench.preset_goals("mixed", {"plans": PLANS, "rows": rows, **(part or NEAR_CAPACITY)})


def test_goals_count_only_at_a_load_near_vllms_defaults_steady_capacity():
    light = goals_for(ours=9.6, best=10.0, default=9.0, rate_rps=5.0, capacity={"steady_request_rps": 10.0})
    assert [g["met"] for g in light] == [False, False]
    assert "at 0.50x the closed-loop rate, below 0.85x with vLLM's defaults within the SLO: not counted" \
        in light[0]["name"]
    burst = goals_for(ours=9.6, best=10.0, default=9.0, rate_rps=5.0, capacity={"request_throughput_rps": 6.0})
    assert [g["met"] for g in burst] == [False, False]
    assert "not compared with a steady capacity" in burst[0]["name"]
    assert "at 0.90x the closed-loop rate:" in goals_for(ours=9.6, best=10.0, default=9.0)[0]["name"]


def test_goals_count_below_the_closed_loop_rate_where_vllms_defaults_already_fall_short():
    # A tight TTFT: the closed loop's rate was reached far beyond the SLO, the open loop's at 0.8x misses it.
    rows = [row(64, 2304, 9.6, slo_attainment=0.99), row(256, 2304, 10.0, slo_attainment=1.0),
            row(1024, 8192, 9.0, slo_attainment=0.89), row(32, 8192, 0.1, slo_attainment=0.01)]
    part = {"plans": PLANS, "rows": rows, "rate_rps": 8.0, "capacity": {"steady_request_rps": 10.0}}
    assert bench.defaults_fall_short(part)
    counted = bench.preset_goals("mixed", part)
    assert "at 0.80x the closed-loop rate:" in counted[0]["name"] and [g["met"] for g in counted] == [True, True]
    rows[2]["slo_attainment"] = 0.96  # within the search's 95%: a light load after all
    assert not bench.defaults_fall_short(part)
    assert [g["met"] for g in bench.preset_goals("mixed", part)] == [False, False]


def test_goals_do_not_count_where_every_setting_met_the_slo():
    # 1 - 2e-16: a float sum's rounding, not a missed request
    rows = [row(seqs, 8192, 9.0, rate_rps=9.0, slo_attainment=a) for seqs, a in ((64, 1.0), (256, 1 - 2e-16),
                                                                                (1024, 0.995))]
    plans = [{**PLANS[0], "max_num_batched_tokens": 8192}, PLANS[1]]
    tied = bench.preset_goals("mixed", {"plans": plans, "rows": rows, **NEAR_CAPACITY})
    assert [g["met"] for g in tied] == [False, False]
    assert "where no setting fell short of the best by more than noise: not counted" in tied[0]["name"]
    rows[2]["slo_attainment"] = 0.9  # vLLM's defaults now fall short: the load ranks, and the plan wins
    assert bench.ranks_settings(rows)
    assert [g["met"] for g in bench.preset_goals("mixed", {"plans": plans, "rows": rows, **NEAR_CAPACITY})] \
        == [True, True]


def test_the_plan_meets_its_goals_within_5_percent_of_the_best_and_above_vllms_defaults():
    goals = goals_for(ours=9.6, best=10.0, default=9.0)
    assert [g["met"] for g in goals] == [True, True]
    assert goals[0]["measured"] == pytest.approx(0.96)
    assert "max_num_seqs 256, budget 2304" in goals[0]["name"]


def test_the_plan_misses_below_95_percent_of_the_best_or_over_1_percent_below_vllms_defaults():
    assert [g["met"] for g in goals_for(ours=9.0, best=10.0, default=8.0)] == [False, True]
    assert [g["met"] for g in goals_for(ours=9.8, best=10.0, default=9.95)] == [True, False]
    assert [g["met"] for g in goals_for(ours=9.86, best=10.0, default=9.95)] == [True, True]  # within the noise


def test_a_plan_not_measured_is_an_unmet_goal():
    goals = bench.preset_goals("batch", {"plans": PLANS, "rows": [row(1024, 8192, 3.0)], **NEAR_CAPACITY})
    assert [g["met"] for g in goals] == [False]


ADAPTIVE_PLAN = {"label": "controller:adaptive", "max_num_seqs": 1024, "max_num_batched_tokens": 8192}


def sweep_at(rate: float) -> dict:
    rows = [row(seqs, 8192, 0.0, rate_rps=rate, slo_attainment=a) for seqs, a in ((256, 0.34), (512, 0.73),
                                                                                   (1024, 0.85))]
    return {"plans": [ADAPTIVE_PLAN, PLANS[1]], "rows": rows, "rate_rps": rate,
            "capacity": {"steady_request_rps": rate / 1.26}}


def test_an_adaptive_plan_is_judged_by_our_apps_run_not_by_the_sweep_row_of_its_engine_settings():
    part = sweep_at(30.0)
    assert bench.preset_goals("mixed", part) == []  # its engine row is vLLM's defaults': no goal from it
    goals = bench.app_goals("mixed", part, {"rate_rps": 30.0, "slo_attainment": 0.68})
    assert [g["met"] for g in goals] == [False, False]
    assert goals[0]["measured"] == pytest.approx(0.8)  # 0.68 / 0.85
    assert "our app (adaptive policy, FP16 KV)" in goals[0]["name"]
    assert [g["met"] for g in bench.app_goals("mixed", part, {"rate_rps": 30.0, "slo_attainment": 0.845})] \
        == [True, True]


def test_our_apps_run_missing_or_at_another_rate_is_an_unmet_goal():
    part = sweep_at(30.0)
    assert [g["met"] for g in bench.app_goals("mixed", part, None)] == [False]
    [other_rate] = bench.app_goals("mixed", part, {"rate_rps": 25.0, "slo_attainment": 1.0})
    assert not other_rate["met"] and "run at the sweep's rate" in other_rate["name"]


def test_the_summary_judges_our_apps_fp16_run_of_the_fp8_kv_part_on_the_mixed_preset():
    fp8 = {"runs": {"fp16": {"goodput": {"rate_rps": 30.0, "slo_attainment": 0.9}}}}
    result = bench.summary({"mixed": sweep_at(30.0), "batch": sweep_at(40.0)}, fp8, None, ["cmd"], "H200")
    ours = [g for g in result["goals"] if "our app" in g["name"]]
    assert [g["met"] for g in ours] == [True, True, False]  # mixed: both goals; batch: not run


def test_a_preset_parts_own_app_run_outranks_the_fp8_kv_parts_and_judges_its_preset():
    fp8 = {"runs": {"fp16": {"goodput": {"rate_rps": 30.0, "slo_attainment": 0.6}}}}
    batch = {**sweep_at(40.0), "app_run": {"rate_rps": 40.0, "slo_attainment": 0.85}}
    mixed = {**sweep_at(30.0), "app_run": {"rate_rps": 30.0, "slo_attainment": 0.9}}
    result = bench.summary({"mixed": mixed, "batch": batch}, fp8, None, ["cmd"], "H200")
    assert [g["met"] for g in result["goals"] if "our app" in g["name"]] == [True, True, True, True]
    assert bench.app_run_of("batch", sweep_at(40.0), fp8) is None  # the fp8-kv part runs the mixed workload only


def test_the_summary_judges_the_default_policy_and_lists_the_others_apart():
    part = {**sweep_at(30.0), "plans": [ADAPTIVE_PLAN, {**PLANS[0], "max_num_batched_tokens": 8192}, PLANS[1]],
            "app_run": {"rate_rps": 30.0, "slo_attainment": 0.85}}
    part["rows"].append(row(64, 8192, 0.0, rate_rps=30.0, slo_attainment=0.2))
    result = bench.summary({"mixed": part}, None, None, ["cmd"], "H200")
    assert all("memory_budget" not in g["name"] for g in result["goals"])
    assert [g["met"] for g in result["goals"] if "our app" in g["name"]] == [True, True]
    assert [("memory_budget" in g["name"], g["met"]) for g in result["other_policies"]] == [(True, False)] * 2
    unmeasured = bench.summary({"mixed": part}, None, None, ["cmd"], "H200", expected_presets=["mixed", "long-form"])
    assert {"name": "long-form: the sweep and our app measured", "measured": False, "goal": True,
            "met": False} in unmeasured["goals"]


def test_kv_capacity_within_3_percent_of_vllms_allocation_for_the_worst_engine_of_each_dtype():
    checks = [*bench.status_kv_checks("ours-fp16", "fp16", {"r1": {"predicted_kv_tokens": 102_000,
                                                                    "actual_kv_tokens": 100_000}}),
              bench.KvCheck("vllm-8192", "fp16", 100_500, 100_000, "log"),
              bench.KvCheck("ours-fp8", "fp8", 190_000, 200_000, "log")]
    goals = bench.kv_capacity_goals(checks)
    assert [g["met"] for g in goals] == [True, False]
    assert goals[0]["measured"] == pytest.approx(0.02)
    assert goals[1]["measured"] == pytest.approx(-0.05)
    assert [g["met"] for g in bench.kv_capacity_goals(checks[:2])] == [True, False]  # no fp8 engine measured


def test_a_status_without_both_figures_gives_no_check():
    assert bench.status_kv_checks("ours-fp8", "fp8", {"r1": {"predicted_kv_tokens": 5, "actual_kv_tokens": None}}) == []


def test_vllms_kv_allocation_is_read_from_its_last_start_in_the_engine_log():
    log = ("(EngineCore pid=7) INFO [kv_cache_utils.py:2177] GPU KV cache size: 975,232 tokens\n"
           "restarted\n(EngineCore pid=9) INFO [kv_cache_utils.py:2177] GPU KV cache size: 1,962,416 tokens\n")
    assert bench.allocated_kv_tokens(log) == 1_962_416
    assert bench.allocated_kv_tokens("no engine started") is None


def test_the_predicted_kv_for_an_engine_at_the_planning_budget_is_the_plans():
    plan = bench.controller_plan("memory_budget", LLAMA3_8B, H200, get_preset("interactive"), max_model_len=8192,
                                 gpu_memory_utilization=0.9)
    common = dict(kv_cache_dtype="auto", max_model_len=8192, gpu_memory_utilization=0.9)
    assert bench.predicted_kv_tokens(LLAMA3_8B, H200, max_num_batched_tokens=8192, **common) == plan.predicted_kv_tokens
    # a smaller step needs less activation memory, so more is left for the KV cache
    assert bench.predicted_kv_tokens(LLAMA3_8B, H200, max_num_batched_tokens=2048, **common) > plan.predicted_kv_tokens


def test_steady_rate_is_taken_while_every_client_is_busy_not_over_start_and_tail():
    # 100 completions one every 0.1 s, then a straggler 30 s later: the whole run's rate would be 101 / 40.
    ends = [0.1 * i for i in range(1, 101)] + [40.0]
    assert bench.steady_request_rate(ends) == pytest.approx(10.0)
    assert bench.steady_request_rate([1.0, 1.0, 1.0]) is None
    assert bench.steady_request_rate([]) is None


def test_goodput_ranks_settings_by_requests_within_the_slo_at_the_offered_rate():
    fast_drain = row(256, 8192, 9.9, rate_rps=10.0, slo_attainment=1.0, duration_s=39.0)
    slow_drain = row(1024, 8192, 9.8, rate_rps=10.0, slo_attainment=1.0, duration_s=39.4)
    assert bench.goodput(fast_drain) == bench.goodput(slow_drain) == 10.0
    assert bench.goodput(row(64, 8192, 5.0)) == 5.0  # a row without the offered rate: the driver's goodput


def test_summary_marks_the_controllers_chunked_budget_and_misses_a_missing_fp8_part():
    chunked = {"controller_budget": 1024,
               "rows": [{"max_num_batched_tokens": 1024, "prefill_ttft_p99_s": 1.0, "decode_tpot_p99_s": 0.02},
                        {"max_num_batched_tokens": 8192, "prefill_ttft_p99_s": 1.2, "decode_tpot_p99_s": 0.05}]}
    result = bench.summary({"mixed": {"plans": PLANS, "rows": []}}, None, chunked, ["cmd"], "H200")
    assert result["chunked_prefill"]["controller_budget_on_front"] is True
    assert result["chunked_prefill"]["front_budgets"] == [1024]
    assert result["goals"][-1] == {"name": "KV capacity fp8: an engine's allocation measured", "measured": False,
                                   "goal": True, "met": False}
    assert set(result) >= {"gpu", "commands", "goals"}


def test_our_apps_fp8_config_lets_the_controller_plan_for_the_preset():
    from pathlib import Path

    from serve_app.config import parse_config

    config = parse_config(bench.ours_kv_config(Path("/models/x"), 8000, get_preset("mixed"), kv_cache_dtype="fp8",
                                               policy="memory_budget", max_model_len=8192,
                                               gpu_memory_utilization=0.9))
    assert (config.engine.max_num_seqs, config.engine.max_num_batched_tokens) == (None, None)
    assert (config.engine.kv_cache_dtype, config.engine.preset, config.engine.batch_size_policy) == \
        ("fp8", "mixed", "memory_budget")
    assert [(c.name, c.ttft_slo_s, c.tpot_slo_s) for c in config.priority_classes] == [("mixed", 1.0, 0.08)]


def test_a_preset_runs_figures_come_from_the_drivers_stats_judged_against_the_presets_slo():
    from autoscaling.bench.controller_runs import figures, preset_slos
    from autoscaling.loadtest.metrics import all_stats
    from autoscaling.loadtest.preset_workload import preset_workload

    wl = preset_workload("interactive", 2048)
    requests = [dataclasses.replace(request(0.1, 1.1, 11), class_name=wl.class_name),   # met
                dataclasses.replace(request(0.9, 1.9, 11), class_name=wl.class_name)]   # TTFT misses 0.5 s

    def result(slos: dict) -> dict:
        return {"command": "test", "duration_s": 2.0, **all_stats(requests, 2.0, slos)}

    assert figures(result(preset_slos(wl)), wl)["goodput_rps"] == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="not the preset's SLO"):
        figures(result({}), wl)  # a run the driver judged by no SLO would count every completion as good


# ---- open-loop rate search --------------------------------------------------------------------------
def probe(rate: float, attainment: float) -> dict:
    return {"rate_rps": rate, "slo_attainment": attainment}


def search(attainment_at, start: float, max_probes: int = 6) -> list[dict]:
    probes: list[dict] = []
    while (rate := bench.next_probe_rate(probes, start, max_probes)) is not None:
        probes.append(probe(rate, attainment_at(rate)))
    return probes


def test_the_rate_search_climbs_then_bisects_the_step_where_vllms_defaults_fall_short():
    probes = search(lambda rate: 1.0 if rate < 26 else 0.9 if rate < 30 else 0.8, start=20.0)
    assert [round(p["rate_rps"], 2) for p in probes] == [20.0, 25.0, 31.25, 27.95]  # sqrt(25 x 31.25)
    assert bench.searched_rate(probes) == pytest.approx(27.95, abs=0.01)  # the lowest that fell short


def test_an_overloaded_start_searches_down():
    probes = search(lambda rate: 1.0 if rate < 18 else 0.6, start=20.0)
    assert [round(p["rate_rps"], 2) for p in probes] == [20.0, 16.0, 17.89]
    assert bench.searched_rate(probes) == 20.0  # 17.89 still met the SLO


def test_the_rate_search_is_bounded_and_can_be_turned_off():
    assert bench.next_probe_rate([], 20.0, max_probes=0) is None
    assert bench.searched_rate([]) is None
    always_met = search(lambda rate: 1.0, start=20.0, max_probes=3)
    assert len(always_met) == 3
    assert bench.searched_rate(always_met) == pytest.approx(31.25)  # the highest probed


def test_router_windows_keep_each_replicas_window_and_the_queue():
    from autoscaling.bench.controller_runs import router_windows

    stats = {"queue_depth": 7, "running": 3, "classes": {"mixed": {"queued": 7}},
             "replicas": {"r1": {"window": 5, "window_cap": 476, "controller_cap": 524, "in_flight": 3,
                                 "outstanding_tokens": 900}}}
    assert router_windows(stats) == {"queue_depth": 7, "replicas": {"r1": {"window": 5, "window_cap": 476,
                                                                             "in_flight": 3}}}
    assert router_windows({}) == {"queue_depth": None, "replicas": {}}
    window_state = {"moves": {"cut_tpot": 1, "grow_queued": 4}, "tpot_ewma_s": 0.05, "ttft_ewma_s": 0.4}
    with_state = {**stats, "replicas": {"r1": {**stats["replicas"]["r1"], "window_state": window_state}}}
    assert router_windows(with_state)["replicas"]["r1"]["window_state"] == window_state
    recent = {"mixed": {"n": 40, "p50_s": 0.3, "p99_s": 0.9, "max_s": 1.0}}
    split = router_windows({**stats, "replica_ttft_recent": recent, "ingress": {"ttft_recent": recent},
                            "classes": {"mixed": {"queue_wait_p50_s": 0.01, "queue_wait_p99_s": 2.0}}})
    assert split["ttft_recent"] == {"ingress": recent, "replica": recent}
    assert split["queue_wait"] == {"mixed": {"p50_s": 0.01, "p99_s": 2.0}}
    cpu = {"process": 1.3, "loop_thread": 0.97, "over_s": 9.9}
    ingress = {"replica": "i1", "loop_stalls": {"stalls": 2, "lag_recent": {"n": 40, "p50_s": 0.01, "p99_s": 0.3,
                                                                            "max_s": 0.4}, "cpu_recent": cpu},
               "streams": {"sending": 400, "writes": 9000, "min_gap_s": {"mixed": 0.2}}}
    assert router_windows({**stats, "ingress": ingress})["ingress"] == {
        "loop_lag_p99_s": 0.3, "loop_lag_max_s": 0.4, "cpu_recent": cpu, "streams": ingress["streams"]}
    assert "first_part_path" not in router_windows({**stats, "ingress": ingress})
    path = {"delivery": {"n": 40, "p50_s": 0.02, "p99_s": 0.2, "max_s": 0.3}}
    assert router_windows({**stats, "ingress": {**ingress, "first_part_path": path}})["first_part_path"] == path


def test_an_earlier_runs_capacity_and_default_row_carry_over_as_probes():
    default_row = row(1024, 8192, 20.0, slo_attainment=1.0, ttft_p99_s=0.4)
    earlier = {"capacity": {"steady_request_rps": 24.0}, "rate_rps": 21.6,
               "rows": [row(238, 8192, 20.0, slo_attainment=1.0), default_row]}
    carried = bench.carried_over(earlier, bench.UNRECORDED_WINDOW_S)
    assert carried["capacity"] == {"steady_request_rps": 24.0}
    assert carried["rate_probes"] == [{**default_row, "rate_rps": 21.6, "carried": True}]
    # The search goes on from there: 0.9 x 24 = 21.6 is known to meet the SLO.
    assert bench.next_probe_rate(carried["rate_probes"], 21.6, max_probes=5) == pytest.approx(27.0)
    probed = {**earlier, "rate_probes": [probe(21.6, 1.0), probe(27.0, 0.7)], "rate_rps": 27.0}
    assert [p["rate_rps"] for p in bench.carried_over(probed, 45)["rate_probes"]] == [21.6, 27.0]  # not twice


def test_the_router_sampler_keeps_snapshots_and_gaps_until_cancelled():
    import asyncio
    import json as json_module
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from autoscaling.bench.controller_runs import sample_router

    stats = {"queue_depth": 3, "replicas": {"r1": {"window": 8, "window_cap": 16, "in_flight": 8}}}
    served: list[int] = []
    second_answered = threading.Event()

    class Stats(BaseHTTPRequestHandler):
        """The first snapshot, then 503s (a server that stopped answering)."""

        def do_GET(self):
            first = not served
            served.append(1)
            self.send_response(200 if first else 503)
            self.end_headers()
            self.wfile.write(json_module.dumps(stats).encode() if first else b"unavailable")
            if len(served) >= 2:
                second_answered.set()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stats)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    async def until_a_gap() -> list[dict]:
        sampler = asyncio.ensure_future(sample_router(f"http://127.0.0.1:{server.server_port}", interval_s=0.05))
        await asyncio.to_thread(second_answered.wait, 10)
        await asyncio.sleep(0.2)  # the second answer's sample is taken
        sampler.cancel()
        return await sampler

    try:
        samples = asyncio.run(until_a_gap())
    finally:
        server.shutdown()
    assert samples[0] == {"t_s": samples[0]["t_s"], **stats, "answer_s": samples[0]["answer_s"]}
    assert 0 <= samples[0]["answer_s"] < 10
    assert {"t_s", "error"} <= set(samples[1])  # a gap, and sampling went on


# ---- summary.md and plots: the fp8-kv part ----------------------------------------------------------
RATE = 30.0


def fp8_run(attainment: float, rate: float | None = None, **figures) -> dict:
    """One fp8-kv run: closed loop where `rate` is None, else open loop at it; the router sampled twice
    with a gap between."""
    timeline = [{"t_s": 0.5, "queue_depth": 0, "replicas": {"r1": {"window": 400, "window_cap": 500, "in_flight": 0}}},
                {"t_s": 2.5, "error": "no answer"},
                {"t_s": 4.5, "queue_depth": 37, "replicas": {"r1": {"window": 300, "window_cap": 500,
                                                                    "in_flight": 290}}}]
    base = {"sent": 100, "completed": 99, "failed": 1, "duration_s": 10.0, "goodput_rps": 4.0,
            "slo_attainment": attainment, "request_throughput_rps": 9.9, "output_token_throughput_tps": 3000.0,
            "ttft_p50_s": 0.5, "ttft_p99_s": 2.0, "tpot_p50_s": 0.03, "tpot_p99_s": 0.05}
    return {**base, **({} if rate is None else {"rate_rps": rate}), **figures, "router_timeline": timeline}


def fp8_kv_part(goodput_rate: float = RATE) -> dict:
    def replica(seqs: int, predicted: int, allocated: int) -> dict:
        return {"plan": {"max_num_seqs": seqs, "max_num_batched_tokens": 8192}, "predicted_kv_tokens": predicted,
                "actual_kv_tokens": allocated, "window": seqs}

    return {"part": "fp8-kv", "gpu": "H200",
            "status": {"fp8": {"r8": replica(1024, 2_020_000, 2_000_000)}, "fp16": {"r16": replica(649, 990_000,
                                                                                                   1_000_000)}},
            "runs": {"fp8": {"capacity": fp8_run(0.0, steady_request_rps=25.0),
                             "goodput": fp8_run(0.25, goodput_rate, ttft_p50_s=3.9,
                                                slo_missed={"ttft_only": 0.6, "tpot_only": 0.1, "both": 0.05})},
                     "fp16": {"capacity": fp8_run(0.0), "goodput": fp8_run(0.5, goodput_rate)}}}


def mixed_part(rate: float = RATE) -> dict:
    figures = {"sent": 100, "completed": 100, "failed": 0, "request_throughput_rps": 10.0,
               "output_token_throughput_tps": 3100.0, "ttft_p50_s": 0.36, "ttft_p99_s": 0.82, "tpot_p99_s": 0.125}
    return {"rate_rps": rate, "plans": PLANS,
            "rows": [row(1024, 8192, 14.7, rate_rps=rate, slo_attainment=0.85, **figures),
                     row(649, 8192, 14.2, rate_rps=rate, slo_attainment=0.8, **figures)]}


def fp8_table(tmp_path, preset_rate: float = RATE, goodput_rate: float = RATE) -> dict[tuple[str, str], list[str]]:
    """summary.md's fp8-kv rows by (KV, run), each row's cells from 'req/s offered' on."""
    from autoscaling.bench.controller_plots import table

    text = table({"mixed": mixed_part(preset_rate)}, tmp_path, fp8_kv_part(goodput_rate), "mixed").read_text()
    section = text[text.index("## our app, FP16 vs FP8 KV (mixed workload)"):]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
             if line.startswith("| fp")]
    return {(c[0], c[1]): c[2:] for c in cells}


def test_summary_md_has_our_apps_runs_per_kv_dtype_beside_vllms_defaults_at_the_same_rate(tmp_path):
    rows = fp8_table(tmp_path)
    vllm = ("fp16", "vllm serve, vLLM's defaults (same rate)")
    assert list(rows) == [("fp16", "capacity"), ("fp16", "goodput"), ("fp8", "capacity"), ("fp8", "goodput"), vllm]
    # offered, goodput (rate x SLO met; the driver's where no rate), SLO met, missed (TTFT / TPOT / both), req/s,
    # out tok/s, TTFT p50, p99, TPOT p99, failed
    assert rows[("fp8", "goodput")] == ["30.000", "7.500", "0.250", "0.600 / 0.100 / 0.050", "9.900", "3000",
                                        "3.900", "2.000", "0.0500", "1"]
    assert rows[("fp16", "goodput")][:3] == ["30.000", "15.000", "0.500"]
    assert rows[("fp8", "capacity")][:3] == ["closed loop", "4.000", "0.000"]
    assert rows[vllm] == ["30.000", "25.500", "0.850", "-", "10.000", "3100", "0.360", "0.820", "0.1250", "0"]
    text = (tmp_path / "summary.md").read_text()
    assert text.index("## mixed at 30.000 req/s") < text.index("## our app, FP16 vs FP8 KV")
    assert ("- fp16 KV, replica r16 (planned max_num_seqs 649, budget 8192): predicted 990,000 KV tokens, "
            "vLLM allocated 1,000,000 (-1.00%)") in text
    assert "- fp8 KV, replica r8 (planned max_num_seqs 1024, budget 8192): predicted 2,020,000" in text
    assert text.index("- fp16 KV") < text.index("- fp8 KV")


def test_summary_md_shows_a_preset_parts_own_app_run_under_its_sweep_rows(tmp_path):
    from autoscaling.bench.controller_plots import preset_pareto, table

    app = {**mixed_part()["rows"][0], "engine": "ours-fp16", "slo_attainment": 0.9, "rate_rps": RATE}
    part = {**mixed_part(), "app_run": app}
    text = table({"mixed": part}, tmp_path).read_text().split("## mixed")[1]
    [line] = [l for l in text.splitlines() if "our app (ours-fp16, started for this preset)" in l]
    assert line.split(" | ")[4] == "0.900"
    assert preset_pareto("mixed", part, tmp_path).exists()


def test_vllms_defaults_are_compared_only_at_the_goodput_runs_rate(tmp_path):
    vllm = ("fp16", "vllm serve, vLLM's defaults (same rate)")
    assert vllm in fp8_table(tmp_path, goodput_rate=RATE * (1 + 1e-9))  # the same rate, read back from JSON
    assert vllm not in fp8_table(tmp_path, goodput_rate=RATE * 1.01)
    assert vllm not in fp8_table(tmp_path, preset_rate=RATE / 1.25)


def test_summary_md_has_no_fp8_kv_section_without_the_part(tmp_path):
    from autoscaling.bench.controller_plots import table

    assert "FP8 KV" not in table({"mixed": mixed_part()}, tmp_path).read_text()
    text = table({}, tmp_path, fp8_kv_part(), "mixed").read_text()  # no preset-mixed: our app's rows alone
    assert "| fp8 | goodput | 30.000 |" in text and "vllm serve" not in text


def test_the_router_timeline_plots_each_kv_dtype_and_run(tmp_path):
    from autoscaling.bench.controller_plots import router_timeline

    path = router_timeline(fp8_kv_part(), tmp_path)
    assert path == tmp_path / "router_timeline.png" and path.stat().st_size > 10_000
    part = fp8_kv_part()
    del part["runs"]["fp8"]["goodput"]  # a run not measured yet
    assert router_timeline(part, tmp_path).stat().st_size > 10_000


def test_summarize_writes_the_fp8_kv_section_and_the_router_timeline(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "preset-mixed.json").write_text(json.dumps({"part": "preset-mixed", "gpu": "H200", **mixed_part()}))
    (tmp_path / "fp8-kv.json").write_text(json.dumps(fp8_kv_part()))
    sustained_run = {"rate_rps": 30.0, "slo_attainment": 0.5}
    (tmp_path / "sustained.json").write_text(json.dumps({"part": "sustained", "gpu": "H200", "window_s": 120,
                                                         "rates_rps": [30.0], "runs": {"vllm-defaults": {
                                                             "30": sustained_run}}}))
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, str(root / "benchmarks" / "controller_h200.py"), "summarize", "--out",
                    str(tmp_path)], check=True, cwd=root, capture_output=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["plots"] == ["pareto_mixed.png", "router_timeline.png"]
    assert summary["sustained"]["runs"]["vllm-defaults"]["30"] == sustained_run
    sustained_goals = [g for g in summary["goals"] if g["name"].startswith("sustained")]
    assert len(sustained_goals) == 1 and not sustained_goals[0]["met"]  # our app's run is missing
    assert (tmp_path / "router_timeline.png").stat().st_size > 0
    assert "| fp16 | vllm serve, vLLM's defaults (same rate) | 30.000 | 25.500 |" in \
        (tmp_path / "summary.md").read_text()


class SteppedClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_clock_counts_from_its_creation_and_assumes_a_step_of_at_least_min_step_s():
    fake = SteppedClock()
    clock = bench_runs.Clock(540, min_step_s=60, now=fake)
    fake.t += 470  # the engine wait: before any run, the budget is already being spent
    assert clock.step_fits()
    fake.t += 20  # 490 s used: a 60 s run would end at 550 > 540
    assert not clock.step_fits()


def test_clock_learns_the_longest_step():
    fake = SteppedClock()
    clock = bench_runs.Clock(540, min_step_s=60, now=fake)
    since = fake.t
    fake.t += 82  # a batch run: window and drain
    clock.done(since)
    assert clock.longest_s == 82
    fake.t = 100 + 459
    assert not clock.step_fits()  # 459 + 82 > 540
    fake.t = 100 + 450
    assert clock.step_fits()


def test_probes_carry_over_only_from_runs_with_the_same_arrival_window():
    earlier = {"capacity": {"steady_request_rps": 18.0}, "rate_rps": 40.0, "rate_probes": [probe(20.0, 1.0)],
               "commands": ["python benchmarks/controller_h200.py start --out /tmp/c19 --engine vllm-8192",
                            "python benchmarks/controller_h200.py measure --out /tmp/c19 --window-s 30 --grid 256"]}
    assert bench.part_window_s(earlier) == 30
    assert [p["rate_rps"] for p in bench.carried_over(earlier, 30)["rate_probes"]] == [20.0]
    longer = bench.carried_over(earlier, 60)
    assert longer == {"capacity": {"steady_request_rps": 18.0}, "rate_probes": []}
    assert bench.part_window_s({**earlier, "window_s": 60}) == 60
    assert bench.part_window_s({"commands": []}) == bench.UNRECORDED_WINDOW_S


@pytest.mark.parametrize("preset, window_s", [("interactive", 30), ("mixed", 30), ("long-form", 30), ("batch", 60)])
def test_a_presets_arrival_window_outlasts_twice_its_ttft_slo(preset, window_s):
    assert bench.arrival_window_s(30, get_preset(preset).ttft_s) == window_s


# ---- requests by outcome, from the saved runs ---------------------------------------------------------
def saved(ttft_s, e2e_s, output_tokens, outcome="completed") -> dict:
    return {"outcome": outcome, "ttft_s": ttft_s, "e2e_s": e2e_s, "output_tokens": output_tokens}


SAVED = [saved(0.2, 1.2, 11),    # TPOT 0.1: met
         saved(0.2, 2.2, 11),    # TPOT 0.2: slow only
         saved(0.9, 1.9, 11),    # late only
         saved(0.9, 2.9, 11),    # both
         saved(None, None, None, outcome="refused")]


def test_a_saved_runs_requests_split_by_which_target_they_missed():
    split = bench_runs.requests_by_outcome(SAVED, Slo(0.5, 0.15))
    assert split == {"sent": 5, "met": 0.2, "ttft_only": 0.2, "tpot_only": 0.2, "both": 0.2, "not_completed": 0.2}
    # the same judgement as the load driver's: met is the run's SLO attainment
    records = [RequestRecord(i, "c", 0.0, r["e2e_s"], "completed", 200, r["ttft_s"],
                             [r["ttft_s"]] * 10 + [r["e2e_s"]], r["output_tokens"], 10) for i, r in enumerate(SAVED[:4])]
    stats = class_stats(records, 1.0, {"c": Slo(0.5, 0.15)})
    assert stats["goodput_rps"] / 5 == split["met"]
    assert {k: v / 5 for k, v in stats["slo_misses"].items()} == {k: split[k] for k in ("ttft_only", "tpot_only", "both")}


def test_only_runs_with_an_slo_are_split_and_the_split_shows_in_summary_md(tmp_path):
    from autoscaling.bench.controller_plots import table

    raw = {"preset-mixed_probe_1": {"run": {"requests": SAVED}}, "chunked-prefill_8192": {"prompts": {"requests": SAVED}}}
    by_run = bench_runs.saved_runs_by_outcome(raw, lambda name: Slo(0.5, 0.15) if name.startswith("preset") else None)
    assert list(by_run) == ["preset-mixed_probe_1:run"]
    text = table({}, tmp_path, None, "mixed", by_run).read_text()
    assert "| preset-mixed_probe_1:run | 5 | 0.200 | 0.200 | 0.200 | 0.200 | 0.200 |" in text


def test_sustained_goals_compare_our_app_with_vllms_defaults_rate_by_rate():
    def row(rate: float, attained: float) -> dict:
        return {"rate_rps": rate, "slo_attainment": attained}

    part = {"window_s": 120, "rates_rps": [30.1, 33.7, 36.0], "runs": {
        "vllm-defaults": {"30.1": row(30.1, 0.80), "33.7": row(33.7, 0.40), "36": row(36.0, 0.2)},
        "ours-fp16": {"30.1": row(30.1, 0.70), "33.7": row(33.7, 0.60)}}}
    goals = bench.sustained_goals(part)
    assert [g["met"] for g in goals] == [False, True, False]
    assert goals[0]["measured"] == pytest.approx(30.1 * 0.70, abs=1e-3)  # goodput: rate x attainment
    assert "120 s of arrivals at 33.7 req/s" in goals[1]["name"]
    assert "both measured" in goals[2]["name"]  # ours was not run at 36 req/s
    summary = bench.summary({}, None, None, [], "H200", sustained=part)
    assert [g["met"] for g in summary["goals"] if g["name"].startswith("sustained")] == [False, True, False]
    assert summary["sustained"]["runs"] == part["runs"]


def test_a_long_runs_requests_per_10_s_of_arrivals_show_its_course():
    requests = [{**saved(0.2, 1.2, 11), "send_s": 1.0},   # met
                {**saved(0.9, 1.9, 11), "send_s": 9.9},   # late
                {**saved(3.0, 4.0, 11), "send_s": 25.0},  # late, the next-but-one bucket
                {**saved(None, None, None, outcome="refused"), "send_s": 26.0}]
    rows = bench_runs.by_arrival(requests, Slo(0.5, 0.15))
    assert [(r["t_s"], r["sent"], r["met"]) for r in rows] == [(0.0, 2, 0.5), (20.0, 2, 0.0)]
    assert rows[0]["ttft_p50_s"] == pytest.approx(0.55) and rows[1]["ttft_p10_s"] == rows[1]["ttft_p90_s"] == 3.0


def test_the_sustained_plot_shows_both_engines_per_rate_and_our_router(tmp_path):
    from autoscaling.bench.controller_plots import _recent_p50, sustained_timeline

    rows = [{"t_s": t, "sent": 300, "met": m, "ttft_p10_s": 0.1, "ttft_p50_s": 0.5, "ttft_p90_s": 2.0}
            for t, m in ((0.0, 0.9), (10.0, 0.4))]
    recent = {"mixed": {"n": 40, "p50_s": 0.3, "p99_s": 0.9, "max_s": 1.0}}
    timeline = [{"t_s": 2.0 * i, "queue_depth": i, "answer_s": 0.01 * i,
                 "replicas": {"r1": {"window": 400, "window_cap": 600, "in_flight": 390}},
                 "ttft_recent": {"ingress": recent, "replica": recent if i else None}} for i in range(5)]
    for i, sample in enumerate(timeline):
        sample["replicas"]["r1"]["window_state"] = {"moves": {"cut_tpot": i // 2, "cut_ttft": i // 4}}
    part = {"window_s": 120, "runs": {"ours-fp16": {"30": {"router_timeline": timeline}}}}
    path = sustained_timeline(part, {"vllm-defaults": {"30": rows}, "ours-fp16": {"30": rows, "33": rows}}, tmp_path)
    assert path == tmp_path / "sustained.png" and path.stat().st_size > 20_000
    assert _recent_p50(timeline[1], "replica") == 0.3
    assert math.isnan(_recent_p50(timeline[0], "replica")) and math.isnan(_recent_p50({}, "ingress"))


def test_window_cuts_are_placed_where_the_counted_cuts_grew():
    from autoscaling.bench.controller_plots import window_cuts

    def sample(t, window, moves):
        return {"t_s": t, "replicas": {"r1": {"window": window, "window_state": {"moves": moves}}}}

    samples = [sample(0.0, 400, {"cut_tpot": 3, "grow_queued": 9}),  # cuts of an earlier run: not this one's
               sample(2.0, 300, {"cut_tpot": 4, "grow_queued": 9}),
               {"t_s": 4.0, "error": "no answer"},
               sample(6.0, 280, {"cut_tpot": 4, "cut_ttft": 1}),
               sample(8.0, 290, {"cut_tpot": 4, "cut_ttft": 1, "grow_queued": 12})]
    assert window_cuts(samples) == {"cut_tpot": [(2.0, 300.0)], "cut_ttft": [(6.0, 280.0)]}
    assert window_cuts([]) == {} and window_cuts([sample(0.0, 5, {})]) == {}


def test_our_apps_config_sections_take_the_fields_given_and_keep_the_rest():
    config = {"http": {"port": 8000, "ingress_replicas": 1}, "engine": {"preset": "mixed"}}
    changed = bench.with_sections(config, {"http": {"ingress_replicas": 2}, "router": {"newest_first_after": None}})
    assert changed == {"http": {"port": 8000, "ingress_replicas": 2}, "engine": {"preset": "mixed"},
                       "router": {"newest_first_after": None}}
    assert config["http"]["ingress_replicas"] == 1  # the original untouched



def test_our_apps_runs_that_sampled_the_first_part_path_are_plotted_one_panel_each(tmp_path):
    from autoscaling.bench.controller_plots import FIRST_PART_STAGES, first_part_path, runs_with_first_part_path

    stage = {"n": 10, "p50_s": 0.05, "p99_s": 0.2, "max_s": 0.3}
    sampled = [{"t_s": t, "first_part_path": {**{s: stage for s in FIRST_PART_STAGES}, "total": stage}}
               for t in (2.0, 4.0)]
    parts = {"preset-mixed": {"app_run": {"router_timeline": sampled}},
             "fp8-kv": {"runs": {"fp16": {"capacity": {"router_timeline": [{"t_s": 2.0}]},
                                          "goodput": {"router_timeline": sampled}}}},
             "sustained": {"runs": {"ours-fp16": {"30.1": {"router_timeline": sampled}}, "vllm-defaults": {"30.1": {}}}}}
    timelines = runs_with_first_part_path(parts)
    assert list(timelines) == ["preset-mixed: our app", "fp8-kv: fp16 goodput", "sustained: ours-fp16 30.1"]
    assert first_part_path(timelines, tmp_path).name == "first_part_path.png"
    assert runs_with_first_part_path({"preset-batch": {"rows": []}}) == {}


def test_the_first_part_plot_stacks_the_replicas_split_in_place_of_its_whole_stage_where_sampled():
    from autoscaling.bench.controller_plots import FIRST_PART_STAGES, REPLICA_STAGE_SPLIT, first_part_stages

    whole = [{"t_s": 1.0, "first_part_path": {stage: {} for stage in FIRST_PART_STAGES}}]
    split = [{"t_s": 2.0, "first_part_path": {stage: {} for stage in (*FIRST_PART_STAGES, *REPLICA_STAGE_SPLIT)}}]
    assert first_part_stages(whole) == FIRST_PART_STAGES
    stacked = first_part_stages([*whole, *split])
    assert "replica_to_first_token" not in stacked  # stacked with its parts it would count twice
    assert stacked[:2] == ("before_dispatch", "hop_to_replica") and stacked[2:7] == REPLICA_STAGE_SPLIT
    assert stacked[7:] == ("first_token_to_delivery", "delivery", "ingress_write")
