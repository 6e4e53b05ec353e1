"""The simulator's step model refitted to a GPU's open-loop runs (autoscaling/simulator/gpu_fit.py)."""
from __future__ import annotations

import pytest

from autoscaling.bench.window_overload import H200_LLAMA3_8B_ENGINE
from autoscaling.simulator import gpu_fit
from autoscaling.simulator.fit import PROFILE
from autoscaling.simulator.step_model import StepModel

ENGINE = H200_LLAMA3_8B_ENGINE


def run_of(model: StepModel, preset: str, rate: float, window_s: float = 8.0) -> gpu_fit.MeasuredRun:
    """What a GPU whose steps `model` times would have measured (the simulator standing in for it)."""
    probe = gpu_fit.MeasuredRun(preset, rate, window_s, 1, 1, 1, 1, 1)
    return gpu_fit.MeasuredRun(preset, rate, window_s, **gpu_fit.simulated(model, ENGINE, probe))


def test_probes_of_a_preset_part_become_measured_runs_with_its_window():
    part = {"preset": "mixed", "rate_probes": [
        {"rate_rps": 30.1, "ttft_p50_s": 0.36, "ttft_p99_s": 0.82, "tpot_p50_s": 0.057, "tpot_p99_s": 0.126,
         "slo_attainment": 0.85, "carried": True}]}
    [run] = gpu_fit.measured_runs(part, 30.0)
    assert (run.preset, run.rate_rps, run.window_s, run.slo_attainment) == ("mixed", 30.1, 30.0, 0.85)
    assert run.label == "mixed @ 30.1 req/s"


def test_a_run_matched_exactly_has_no_misfit_and_the_attainment_weighs_like_ten_percent_on_every_figure():
    run = gpu_fit.MeasuredRun("mixed", 10, 5, 0.2, 0.5, 0.03, 0.05, 0.9)
    same = {"ttft_p50_s": 0.2, "ttft_p99_s": 0.5, "tpot_p50_s": 0.03, "tpot_p99_s": 0.05, "slo_attainment": 0.9}
    assert gpu_fit.misfit(same, run) == 0
    assert gpu_fit.misfit({**same, "slo_attainment": 0.8}, run) == pytest.approx(0.01)


def test_the_fit_reproduces_what_a_faster_gpu_measured():
    """Runs that do not tell every coefficient apart need not give back the scales that made them, but the
    refitted model must reproduce them (what the window policy is tuned on)."""
    base = StepModel.load(PROFILE)
    truth = gpu_fit.scaled(base, {"decode": 0.5, "prefill": 0.7})
    runs = [run_of(truth, "mixed", 30.0), run_of(truth, "batch", 24.0)]
    before = gpu_fit.total_misfit(base, ENGINE, runs)
    assert before > 0.1  # the H100 profile does not explain them
    result = gpu_fit.fit(base, ENGINE, runs, groups=("decode", "prefill"))
    assert result.total_misfit < 0.01 * before
    assert result.scales["decode"] < 0.8 and result.scales["prefill"] < 1.0  # faster steps, as made
    assert result.model.per_decode_seq_s == pytest.approx(base.per_decode_seq_s * result.scales["decode"])
    for row in result.per_run:
        for figure in gpu_fit.LATENCY_FIGURES:
            assert row["simulated"][figure] == pytest.approx(row["measured"][figure], rel=0.1)
    assert [r["run"] for r in result.per_run] == ["mixed @ 30.0 req/s", "batch @ 24.0 req/s"]


def test_the_committed_h200_profile_reproduces_the_h200s_vllm_alone_on_the_mixed_preset():
    """benchmarks/fit_gpu_profile.py's output against the run it was fitted to (controller_h200's probe of
    vLLM's defaults at 30.1 req/s: 85% within the SLO, TPOT p50 57 ms), where the H100 profile is far off."""
    import json

    from autoscaling.bench.controller_plans import part_window_s
    from autoscaling.simulator.fit import REPO

    part = json.loads((REPO / "benchmarks/results/controller_h200/preset-mixed.json").read_text())
    [measured] = [r for r in gpu_fit.measured_runs(part, part_window_s(part)) if round(r.rate_rps, 1) == 30.1]
    h200 = StepModel.load(REPO / "autoscaling/simulator/profiles/h200_llama3_8b_awq.json")
    sim = gpu_fit.simulated(h200, ENGINE, measured)
    assert sim["slo_attainment"] == pytest.approx(measured.slo_attainment, abs=gpu_fit.ATTAINMENT_TOLERANCE)
    assert sim["tpot_p50_s"] == pytest.approx(measured.tpot_p50_s, rel=gpu_fit.TPOT_P50_TOLERANCE)
    h100 = gpu_fit.simulated(StepModel.load(PROFILE), ENGINE, measured)
    assert h100["tpot_p50_s"] > 1.5 * measured.tpot_p50_s


def test_the_fit_goals_judge_each_runs_attainment_and_tpot_p50_against_the_measured():
    per_run = [{"run": "mixed @ 30.1 req/s",
                "measured": {"slo_attainment": 0.85, "tpot_p50_s": 0.057},
                "simulated": {"slo_attainment": 0.80, "tpot_p50_s": 0.061}},
               {"run": "mixed @ 33.7 req/s",
                "measured": {"slo_attainment": 0.40, "tpot_p50_s": 0.080},
                "simulated": {"slo_attainment": 0.55, "tpot_p50_s": 0.100}}]
    goals = gpu_fit.fit_goals(per_run)
    assert [g["met"] for g in goals] == [True, True, False, False]
    assert goals[0]["measured"] == 0.8 and goals[0]["goal"] == "within +-0.1"
    assert goals[3]["goal"] == "within +-20%" and "33.7" in goals[3]["name"]
