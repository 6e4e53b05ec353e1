"""The window-against-the-engine-alone simulation: what it judges and how it splits the misses."""
import pytest

from autoscaling.bench.window_overload import (BEFORE_LIFO_AND_SETPOINT, OUTCOMES, Scenario, behind_our_router, by_outcome,
                                              engine_alone, scenario_requests)
from autoscaling.simulator.fit import PROFILE
from autoscaling.simulator.replica import EngineConfig
from autoscaling.simulator.step_model import StepModel

ENGINE = EngineConfig(max_num_seqs=256, max_num_batched_tokens=8192, num_kv_blocks=8518)


def test_misses_split_by_target_and_unserved_requests_count_as_misses():
    split = by_outcome([(0.2, 0.05), (1.5, 0.05), (0.2, 0.2), (1.5, 0.2), None], ttft_slo_s=1.0, tpot_slo_s=0.08)
    assert split == {"met": 0.2, "ttft_only": 0.2, "tpot_only": 0.2, "both": 0.2, "not_served": 0.2}
    assert set(split) == set(OUTCOMES)


def test_the_burst_arrives_at_once_and_the_judged_arrivals_after_the_gap():
    requests = scenario_requests(Scenario(5.0, burst=20, gap_s=50.0, window_s=10.0))
    burst = [r for r in requests if r.request_id.startswith("burst-")]
    assert len(burst) == 20 and all(r.arrival_s == 0.0 for r in burst)
    judged = [r for r in requests if not r.request_id.startswith("burst-")]
    assert judged and all(50.0 <= r.arrival_s < 60.0 for r in judged)
    assert [r.arrival_s - 50.0 for r in judged] == pytest.approx(
        [r.arrival_s for r in scenario_requests(Scenario(5.0, window_s=10.0))])  # the same arrivals, shifted


def test_below_capacity_our_router_serves_every_request_within_the_slo_as_the_engine_alone_does():
    model = StepModel.load(PROFILE)
    scenario = Scenario(2.0, window_s=10.0)
    alone = engine_alone(scenario, model, ENGINE)
    ours, timeline = behind_our_router(scenario, model, ENGINE)
    assert alone["met"] == ours["met"] == pytest.approx(1.0)
    assert timeline and all("windows" in sample for sample in timeline)
    assert sum(ours.values()) == pytest.approx(1.0)


def test_under_a_sustained_overload_newest_first_and_the_tpot_setpoint_beat_the_engine_alone():
    """60 s at 14 req/s, over what 256 sequences serve within the mixed preset's SLO: the engine alone and
    our router as it was before (oldest first: every request inherits the queue's wait; the TPOT average
    held at the target itself) meet it for about a quarter of the requests; the router now, for over half."""
    model = StepModel.load(PROFILE)
    scenario = Scenario(14.0, window_s=60.0)
    alone = engine_alone(scenario, model, ENGINE)
    before, _ = behind_our_router(scenario, model, ENGINE, router=BEFORE_LIFO_AND_SETPOINT)
    ours, _ = behind_our_router(scenario, model, ENGINE)
    assert alone["met"] < 0.3 and before["met"] < 0.3
    assert ours["met"] > 0.5
    assert ours["met"] > 2 * alone["met"]


def test_with_admission_on_the_unserved_split_into_refused_at_once_and_after_waiting():
    model = StepModel.load(PROFILE)
    scenario = Scenario(14.0, window_s=60.0, queue_deadline_s=10.0)
    ours, _ = behind_our_router(scenario, model, ENGINE)
    before, _ = behind_our_router(scenario, model, ENGINE, router=BEFORE_LIFO_AND_SETPOINT)
    for shares in (ours, before):
        assert shares["refused_at_once"] + shares["refused_after_waiting"] == pytest.approx(shares["not_served"])
        assert sum(shares[k] for k in OUTCOMES) == pytest.approx(1.0)
    assert before["refused_at_once"] > 0  # an overload: admission refused
    assert ours["met"] > before["met"]
    assert "refused_at_once" not in behind_our_router(Scenario(14.0, window_s=10.0), model, ENGINE)[0]


def test_the_goals_are_our_routers_attainment_at_least_the_engine_alones_per_scenario_and_rate():
    from autoscaling.bench.window_overload import attainment_goals

    results = [{"scenario": "fresh", "rate_rps": 30.1, "engine_alone": {"met": 0.875}, "our_router": {"met": 0.88}},
               {"scenario": "after_burst", "rate_rps": 27.0, "engine_alone": {"met": 0.974}, "our_router": {"met": 0.951}}]
    goals = attainment_goals(results)
    assert [g["met"] for g in goals] == [True, False]
    assert goals[0]["name"].startswith("fresh at 30.1 req/s") and goals[1]["goal"] == ">= 0.9740"
