"""Capacity model (autoscaling/capacity.py): hand-made sweeps -> capacity -> autoscaling values."""
from __future__ import annotations

import math
from typing import get_args

import pytest

from autoscaling.capacity import (CapacityError, Percentile, SloChoice, derive_autoscaling, estimate_capacity,
                                  sweep_table)
from autoscaling.llm_policy import LLMPolicySettings
from serve_app.autoscaling_config import DOWNSCALE_DELAY_S, AutoscalingSettings
from serve_app.statistics import SUMMARY_KEYS, summary


def pct(p99: float | None, mean: float | None = None) -> dict:
    mean = p99 if mean is None else mean
    return {"mean": mean, "p50": mean, "p90": p99, "p99": p99}


def stats(ttft_p99, tpot_p99, sent=100, refused=0, failed=0, e2e=2.0, rps=1.0, slo=(0.5, 0.1)) -> dict:
    return {"sent": sent, "completed": sent - refused - failed, "refused_429": refused, "refused_503": 0,
            "failed": failed, "ttft_s": pct(ttft_p99), "tpot_s": pct(tpot_p99), "itl_s": pct(tpot_p99),
            "e2e_s": pct(e2e * 1.5, e2e), "request_throughput_rps": rps, "output_token_throughput_tps": 0.0,
            "input_token_throughput_tps": 0.0, "goodput_rps": rps,
            "slo": {"ttft_s": slo[0], "tpot_s": slo[1]}}


def run(rate, ttft_p99, tpot_p99, in_flight=None, e2e=2.0, refused=0, failed=0) -> dict:
    interactive = stats(ttft_p99, tpot_p99, refused=refused, failed=failed, e2e=e2e, rps=rate)
    return {"kind": "load_test", "command": f"load --rate {rate}", "offered_rate_rps": rate, "duration_s": 60,
            "mean_in_flight": rate * e2e if in_flight is None else in_flight,
            "overall": stats(ttft_p99, tpot_p99, e2e=e2e, rps=rate, slo=(None, None)),
            "classes": {"interactive": interactive}}


def sweep(*runs) -> dict:
    return {"kind": "rate_sweep", "command": "sweep", "runs": list(runs)}


INTERACTIVE = SloChoice(slo_class="interactive")


def test_capacity_is_interpolated_on_the_chord_between_last_pass_and_first_fail():
    # TTFT margin 0.6 at 2 rps, 1.4 at 4 rps: the chord reaches 1.0 halfway, at 3 rps.
    est = estimate_capacity(sweep(run(1, 0.1, 0.05), run(2, 0.3, 0.05), run(4, 0.7, 0.05)), INTERACTIVE)
    assert est.max_rate_rps == pytest.approx(3.0)
    assert (est.source_run, est.interpolated_toward_run, est.bounded_by_sweep) == (1, 2, False)
    # In-flight: the passing run's (2 rps x 2 s = 4) scaled by rate, latency held at the passing run's.
    assert est.mean_in_flight == pytest.approx(4 * 3 / 2)


def test_the_tightest_failing_metric_sets_the_crossing():
    # TTFT crosses at 3.5 rps, TPOT (0.08 -> 0.16 s against 0.1) at 2 + 0.2/0.8 x 2 = 2.5 rps.
    est = estimate_capacity(sweep(run(2, 0.25, 0.08), run(4, 0.75, 0.16)), INTERACTIVE)
    assert est.max_rate_rps == pytest.approx(2.5)


def test_a_failing_run_without_samples_gives_no_interpolation():
    est = estimate_capacity(sweep(run(2, 0.3, 0.05), run(4, None, 0.05)), INTERACTIVE)
    assert est.max_rate_rps == 2 and est.interpolated_toward_run is None


def test_capacity_stays_below_the_first_failure_even_if_a_higher_rate_passes():
    runs = [run(1, 0.1, 0.05), run(2, 0.6, 0.05), run(3, 0.2, 0.05)]  # 3 rps passing is noise
    est = estimate_capacity(sweep(*runs), INTERACTIVE)
    assert est.max_rate_rps < 2
    assert any("passed again" in note for note in est.notes)


def test_refusals_beyond_the_allowed_share_fail_a_run():
    # 5 of 100 refused against 1% allowed: margin 5, while latency is fine.
    runs = [run(1, 0.1, 0.05), run(2, 0.1, 0.05, refused=5)]
    est = estimate_capacity(sweep(*runs), INTERACTIVE)
    assert est.source_run == 0 and est.max_rate_rps < 2
    lenient = estimate_capacity(sweep(*runs), SloChoice(slo_class="interactive", max_unserved_share=0.1))
    assert lenient.max_rate_rps == 2 and lenient.bounded_by_sweep


def test_runs_are_sorted_by_rate_and_divided_by_the_replicas_swept():
    est = estimate_capacity(sweep(run(8, 0.7, 0.05), run(4, 0.3, 0.05)), INTERACTIVE, replicas_in_sweep=2)
    assert est.source_run == 1 and est.source_rate_rps == 2
    assert est.max_rate_rps == pytest.approx(2 + 0.4 / 0.8 * 2)


def test_explicit_limits_and_percentile_override_the_runs_own():
    runs = sweep(run(1, 0.1, 0.05), run(2, 0.3, 0.05))
    assert estimate_capacity(runs, SloChoice(slo_class="interactive", ttft_slo_s=0.2)).max_rate_rps < 2
    # overall stats carry no SLO: limits must be given.
    with pytest.raises(CapacityError, match="no latency limit"):
        estimate_capacity(runs, SloChoice())
    assert estimate_capacity(runs, SloChoice(ttft_slo_s=1.0, tpot_slo_s=0.1)).bounded_by_sweep


def test_littles_law_disagreement_is_noted():
    agree = estimate_capacity(sweep(run(2, 0.1, 0.05)), INTERACTIVE)
    assert agree.littles_law_in_flight == pytest.approx(agree.mean_in_flight) and agree.littles_law_gap == 0
    off = estimate_capacity(sweep(run(2, 0.1, 0.05, in_flight=8.0)), INTERACTIVE)
    assert off.littles_law_gap == pytest.approx(0.5)
    assert any("Little's law" in note for note in off.notes)


@pytest.mark.parametrize("bad, message", [
    ({"kind": "load_test"}, "expected a rate sweep"),
    (sweep(), "expected a rate sweep"),
    (sweep({"offered_rate_rps": 1, "classes": {"interactive": {}}}), "does not follow the load-test schema"),
    (sweep(run(1, 0.9, 0.05)), "even the lowest rate"),
])
def test_unusable_sweeps_raise(bad, message):
    with pytest.raises(CapacityError, match=message):
        estimate_capacity(bad, INTERACTIVE)


def test_unknown_class_is_named():
    with pytest.raises(CapacityError, match="no class 'gold'"):
        estimate_capacity(sweep(run(1, 0.1, 0.05)), SloChoice(slo_class="gold"))


def test_derived_autoscaling_follows_the_formulas():
    est = estimate_capacity(sweep(run(1, 0.1, 0.05), run(2, 0.3, 0.05), run(4, 0.7, 0.05)), INTERACTIVE)
    derived = derive_autoscaling(est, peak_rate_rps=40, min_replicas=2, headroom=0.2)
    assert derived.max_replicas == math.ceil(40 / (3.0 * 0.8))
    assert derived.target_ongoing_requests == pytest.approx(round(6.0 * 0.8, 2))
    assert derived.target_rps_per_replica == pytest.approx(round(est.max_rate_rps * 0.8, 2))
    assert derived.min_replicas == 2
    assert derived.upscale_delay_s < derived.downscale_delay_s
    assert derived.upscale_smoothing_factor > derived.downscale_smoothing_factor
    assert derived.look_back_period_s >= 3 * est.mean_e2e_s
    assert set(derived.settings()) >= {"min_replicas", "max_replicas", "target_ongoing_requests",
                                       "upscale_delay_s", "downscale_delay_s", "look_back_period_s"}
    assert len(derived.reasons) >= 5



def test_derived_downscale_delay_is_the_configs_default_or_three_starts_if_longer():
    est = estimate_capacity(sweep(run(1, 0.1, 0.05), run(2, 0.3, 0.05)), INTERACTIVE)
    assert derive_autoscaling(est, peak_rate_rps=4, replica_start_s=120).downscale_delay_s == DOWNSCALE_DELAY_S
    assert derive_autoscaling(est, peak_rate_rps=4, replica_start_s=300).downscale_delay_s == 900
    assert AutoscalingSettings().downscale_delay_s == LLMPolicySettings().downscale_delay_s == DOWNSCALE_DELAY_S

def test_max_replicas_never_below_min_and_exact_fits_do_not_round_up():
    est = estimate_capacity(sweep(run(5, 0.1, 0.05)), INTERACTIVE)
    assert derive_autoscaling(est, peak_rate_rps=20, headroom=0.2).max_replicas == 5  # 20 / 4 exactly
    assert derive_autoscaling(est, peak_rate_rps=1, min_replicas=3).max_replicas == 3


@pytest.mark.parametrize("kwargs", [{"headroom": 1.0}, {"headroom": -0.1}, {"peak_rate_rps": 0}])
def test_derive_rejects_nonsense(kwargs):
    est = estimate_capacity(sweep(run(5, 0.1, 0.05)), INTERACTIVE)
    with pytest.raises(CapacityError):
        derive_autoscaling(est, **{"peak_rate_rps": 10, **kwargs})


def test_sweep_table_marks_passing_runs():
    est = estimate_capacity(sweep(run(1, 0.1, 0.05), run(4, 0.7, 0.05)), INTERACTIVE)
    assert [row["meets_slo"] for row in sweep_table(est.points)] == [True, False]


def test_a_backlog_after_the_arrivals_fails_a_run_although_the_slo_class_is_fine():
    # Lower classes queue while the top class still meets its SLO: the last response comes long after
    # the last arrival. Light-load e2e p99 is 3 s (e2e 2 s x 1.5), so the drain limit is 2 x 3 = 6 s.
    runs = []
    for rate, drain in ((2, 3.0), (4, 4.5), (6, 15.0)):
        r = run(rate, 0.2, 0.05)
        r["workload"] = {"duration_s": 60}
        r["duration_s"] = 60 + drain
        runs.append(r)
    estimate = estimate_capacity(sweep(*runs), INTERACTIVE)
    margins = [p.margins["backlog"] for p in estimate.points]
    assert margins == pytest.approx([0.5, 0.75, 2.5])
    # Chord from (4, 0.75) to (6, 2.5) reaches 1 at 4 + 0.25 * 2 / 1.75.
    assert estimate.max_rate_rps == pytest.approx(4 + 0.5 / 1.75)
    assert not estimate.bounded_by_sweep


def test_runs_that_do_not_record_their_arrival_window_are_judged_without_a_backlog_margin():
    estimate = estimate_capacity(sweep(run(2, 0.2, 0.05), run(4, 0.3, 0.05)), INTERACTIVE)
    assert all("backlog" not in p.margins for p in estimate.points)


def test_percentile_choices_are_the_keys_of_the_shared_summary():
    assert get_args(Percentile) == SUMMARY_KEYS == tuple(summary([1.0]))


def test_the_start_time_assumption_is_the_measured_slowest_warm_start():
    import json
    from pathlib import Path

    from autoscaling.capacity import MEASURED_REPLICA_START_S

    summary = Path(__file__).parents[2] / "benchmarks/results/autoscaling_h200/summary.json"
    (warm_goal,) = [g for g in json.loads(summary.read_text())["goals"] if "warm" in g["name"]]
    assert MEASURED_REPLICA_START_S == max(warm_goal["measured"])
