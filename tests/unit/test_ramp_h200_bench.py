"""Issue 20's GPU ramp benchmark, its pure parts: the schedule both policies see, per-phase and per-class
figures from outcome records, replica timelines (replica-seconds, start times, saturation windows), the
simulated ramp and its calibration, the simulator's error and the goals; the open-loop driver with a fake
client."""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from autoscaling.bench import ramp_comparison as compare
from autoscaling.bench import ramp_driver
from autoscaling.bench.ramp_comparison import RampRequest
from autoscaling.bench.ramp_load import RampShape, base_config, class_slos
from autoscaling.bench.ramp_settings import config_for
from autoscaling.bench.ramp_simulation import (autoscaler_for, calibrated_model, closed_loop_capacity_rps,
                                               engine_config, scaled_model, sim_requests, simulate_ramp)
from autoscaling.bench.start_phases import kv_cache_tokens
from autoscaling.loadtest.client import ClientOptions
from autoscaling.loadtest.metrics import RequestRecord, Slo
from autoscaling.simulator.autoscalers import LLMPolicyAutoscaler, RayDefaultAutoscaler
from autoscaling.simulator.step_model import StepModel
from serve_app.config import parse_config

SLOS = {"interactive": Slo(0.5, 0.1), "batch": Slo(30.0, 0.25)}
PHASES = [("low", 0.0, 10.0), ("high", 10.0, 30.0), ("low-again", 30.0, 40.0)]
MODEL = StepModel(base_s=0.005, per_decode_seq_s=1e-4, per_prefill_token_s=2e-5, per_context_token_s=0.0)


def args(**overrides) -> argparse.Namespace:
    values = dict(min_replicas=1, max_replicas=2, target_ongoing_requests=4.0, upscale_delay_s=2.0,
                  downscale_delay_s=5.0, look_back_period_s=15.0, metrics_push_s=1.0)
    return argparse.Namespace(**{**values, **overrides})


def config(policy: str, **overrides):
    return config_for(parse_config(base_config(Path("/models/x"), 8000, None)), policy, args(**overrides))


def served(index, name="interactive", sent=0.0, ttft=0.1, end=2.0, tokens=10, tpot=0.05) -> RampRequest:
    return RampRequest(index, name, sent, end, "served", ttft, tpot, tokens, 200)


# ---- the load -------------------------------------------------------------------------------------------
def test_both_policies_get_the_same_requests_at_the_same_times_and_the_phases_rates():
    shape = RampShape(low_s=20, high_s=40, low_again_s=20, low_load=0.5, high_load=1.6, seed=3)
    first, second = shape.workload(10.0).plan(), shape.workload(10.0).plan()
    assert [(p.send_offset_s, p.class_name, p.prompt, p.max_tokens) for p in first] == \
           [(p.send_offset_s, p.class_name, p.prompt, p.max_tokens) for p in second]
    assert shape.phases() == [("low", 0.0, 20.0), ("high", 20.0, 60.0), ("low-again", 60.0, 80.0)]
    in_phase = {name: sum(start <= p.send_offset_s < end for p in first) / (end - start)
                for name, start, end in shape.phases()}
    assert in_phase["high"] == pytest.approx(16.0, rel=0.15)
    assert in_phase["low"] == pytest.approx(5.0, rel=0.35)
    assert max(p.send_offset_s for p in first) < 80.0
    assert all(256 <= p.prompt_len <= 1024 and 128 <= p.max_tokens <= 256 for p in first)
    assert sum(p.class_name == "interactive" for p in first) / len(first) == pytest.approx(0.3, abs=0.05)


def test_the_probe_is_closed_loop_on_other_prompts_and_a_shape_round_trips():
    shape = RampShape()
    probe = shape.probe(concurrency=8, requests=20)
    assert probe.max_concurrency == 8 and len(probe.plan()) == 20
    assert probe.plan()[0].prompt != shape.workload(10.0).plan()[0].prompt
    assert RampShape.from_dict(shape.to_dict()) == shape
    with pytest.raises(ValueError):
        RampShape(low_load=2.0, high_load=1.6)


def test_the_app_config_has_the_two_classes_and_both_policies_differ_only_in_the_policy():
    default, llm = config("default"), config("llm")
    assert class_slos(default) == SLOS
    assert default.autoscaling.model_dump(exclude={"policy"}) == llm.autoscaling.model_dump(exclude={"policy"})
    assert (default.autoscaling.policy, llm.autoscaling.policy) == ("default", "llm")
    assert default.engine.max_num_seqs == 128


# ---- outcomes -> figures ------------------------------------------------------------------------------------
def test_a_record_is_served_only_with_every_token_refused_on_429_503_and_lost_otherwise():
    base = dict(index=0, class_name="batch", send_s=1.0, end_s=3.0)
    full = RequestRecord(**base, outcome="completed", status=200, first_token_s=1.2, token_times_s=[1.2, 3.0],
                         output_tokens=16)
    assert compare.from_record(full, 16).kind == "served"
    assert compare.from_record(full, 16).ttft_s == pytest.approx(0.2)
    assert compare.from_record(full, 32).kind == "lost"
    refused = RequestRecord(**base, outcome="refused", status=503, error_code="queue_deadline")
    assert compare.from_record(refused, 16).kind == "refused"
    cut = RequestRecord(**base, outcome="failed", status=200, error_code="incomplete_stream")
    assert (compare.from_record(cut, 16).kind, compare.from_record(cut, 16).detail) == ("lost", "incomplete_stream")


def test_goodput_and_attainment_per_phase_and_class_count_refusals_and_misses():
    requests = [served(0, sent=1.0), served(1, sent=12.0, ttft=0.9),  # missed the interactive TTFT SLO
                RampRequest(2, "interactive", 15.0, 15.1, "refused", status=429),
                served(3, "batch", sent=16.0, ttft=5.0), RampRequest(4, "batch", 33.0, 34.0, "lost")]
    stats = compare.phase_stats(requests, SLOS, PHASES)
    high = stats["high"]
    assert high["interactive"] == {**high["interactive"], "sent": 2, "served": 1, "refused": 1, "met_slo": 0,
                                   "slo_attainment": 0.0, "goodput_rps": 0.0}
    assert high["batch"]["goodput_rps"] == pytest.approx(1 / 20)
    assert stats["low"]["interactive"]["slo_attainment"] == 1.0
    assert stats["low-again"]["batch"]["lost"] == 1 and stats["low-again"]["batch"]["slo_attainment"] == 0.0
    assert stats["run"]["all"]["met_slo"] == 2 and stats["run"]["all"]["goodput_rps"] == pytest.approx(2 / 40)


def test_output_tokens_are_spread_from_first_token_to_end():
    request = served(0, sent=0.0, ttft=1.0, end=11.0, tokens=100)
    assert compare.output_tokens_in([request], (0.0, 6.0)) == pytest.approx(50.0)
    assert compare.output_tokens_in([request], (0.0, 20.0)) == pytest.approx(100.0)
    assert compare.output_tokens_in([RampRequest(1, "batch", 0.0, 5.0, "lost")], (0.0, 20.0)) == 0.0


def test_goodput_series_by_send_window():
    series = compare.goodput_series([served(0, sent=1.0), served(1, sent=12.0), served(2, sent=13.0, ttft=2.0)],
                                    SLOS, window_s=10.0, end_s=40.0)
    assert series["interactive"] == [0.1, 0.1, 0.0, 0.0]
    assert series["batch"] == [0.0] * 4


# ---- replica timelines ----------------------------------------------------------------------------------------
TIMELINE = [(0.0, 1, 1), (12.0, 1, 2), (20.0, 2, 2), (33.0, 1, 2), (35.0, 1, 1)]


def test_replica_seconds_running_and_allocated():
    assert compare.replica_seconds(TIMELINE, 40.0) == pytest.approx(12 + 8 + 13 * 2 + 2 + 5)
    assert compare.replica_seconds(TIMELINE, 40.0, column=2) == pytest.approx(12 + 8 * 2 + 13 * 2 + 2 * 2 + 5)


def test_a_start_is_from_the_replica_appearing_to_it_running_and_a_stop_is_not_a_start():
    assert compare.replica_starts(TIMELINE) == [{"replicas": 2, "requested_s": 12.0, "running_s": 20.0, "start_s": 8.0}]
    assert compare.scale_downs(TIMELINE) == [33.0]
    withdrawn = [(0.0, 1, 1), (5.0, 1, 2), (9.0, 1, 1), (20.0, 1, 2), (80.0, 2, 2)]
    assert [s["start_s"] for s in compare.replica_starts(withdrawn)] == [60.0]
    assert compare.running_at(TIMELINE, 25.0) == 2 and compare.running_at(TIMELINE, -1.0) == 1


def test_two_replicas_count_as_saturated_until_the_router_queue_empties():
    windows = compare.saturation_windows(TIMELINE, (10.0, 30.0), settle_s=1.0, queue=[(21.0, 5), (27.0, 0)])
    assert windows == {"one": (11.0, 20.0), "two": (21.0, 27.0)}
    assert compare.saturation_windows(TIMELINE, (10.0, 30.0), settle_s=1.0)["two"] == (21.0, 30.0)
    assert compare.saturation_windows([(0.0, 1, 1)], (10.0, 30.0), settle_s=1.0) == {"one": (11.0, 30.0), "two": None}


def test_two_replica_scaling_ratio_from_tokens_in_the_windows():
    one = [served(i, sent=10.0 + i, ttft=0.0, end=11.0 + i, tokens=100) for i in range(10)]   # 100 tok/s
    two = [served(20 + i, sent=20.0 + i / 2, ttft=0.0, end=20.5 + i / 2, tokens=100) for i in range(20)]  # 200 tok/s
    scaling = compare.scaling_throughput(one + two, TIMELINE, (10.0, 30.0), settle_s=0.0)
    assert scaling["one_replica_tok_s"] == pytest.approx(100.0)
    assert scaling["two_replicas_tok_s"] == pytest.approx(200.0)
    assert scaling["ratio"] == pytest.approx(2.0)


def test_timeline_error_is_mean_absolute_difference_over_mean_measured():
    measured = [(0.0, 1, 1), (10.0, 2, 2)]
    assert compare.timeline_error(measured, measured, 20.0) == 0.0
    late = [(0.0, 1, 1), (15.0, 2, 2)]
    assert compare.timeline_error(measured, late, 20.0) == pytest.approx((5 / 20) / 1.5)
    assert compare.timeline_error([], late, 20.0) is None
    assert compare.relative_error(10.0, 9.0) == pytest.approx(0.1) and compare.relative_error(0.0, 1.0) is None


# ---- goals -------------------------------------------------------------------------------------------------------
def figures(interactive_goodput, replica_s, lost=0, downs=(33.0,), ratio=1.95):
    return {"phases": {"run": {"interactive": {"goodput_rps": interactive_goodput}}},
            "replica_seconds_allocated": replica_s, "lost": lost, "scale_downs_s": list(downs),
            "scaling": {"ratio": ratio, "one_replica_tok_s": 100.0, "two_replicas_tok_s": 100.0 * ratio,
                        "windows": {}}}


RAMP_SCALING_GOAL = "two replicas vs one saturated, output tok/s (llm policy's scaling, ramp's high phase)"
CLOSED_LOOP_SCALING_GOAL = "two replicas vs one saturated, output tok/s (llm policy's scaling, closed loop)"


def by_name(goals):
    return {g["name"]: g for g in goals}


def test_goals_met_and_not():
    errors = {p: {"replicas_over_time": 0.05, "goodput": {"interactive": 0.02, "batch": 0.2}} for p in ("default", "llm")}
    met = by_name(compare.goals({"default": figures(5.0, 700.0), "llm": figures(6.5, 690.0)}, errors))
    assert met["llm policy: interactive goodput vs default, at <= replica-seconds"]["met"]
    assert met["nothing lost in scale-down"]["met"]
    assert met[RAMP_SCALING_GOAL]["met"]
    assert met["simulator: replicas over time (llm)"]["met"] and met["simulator: interactive goodput (llm)"]["met"]
    assert not met["simulator: batch goodput (default)"]["met"]
    costly = by_name(compare.goals({"default": figures(5.0, 700.0), "llm": figures(6.5, 710.0, lost=1, ratio=1.5)}, {}))
    assert not costly["llm policy: interactive goodput vs default, at <= replica-seconds"]["met"]
    assert not costly["nothing lost in scale-down"]["met"]
    assert not costly[RAMP_SCALING_GOAL]["met"]
    assert not costly["simulator vs measured (llm)"]["met"]
    no_scale_down = by_name(compare.goals({"default": figures(5.0, 700.0, downs=()), "llm": figures(6.5, 690.0)}, {}))
    assert not no_scale_down["nothing lost in scale-down"]["met"]
    assert not by_name(compare.goals({"llm": figures(6.5, 690.0)}, {}))["llm policy: interactive goodput vs default"]["met"]


def test_the_closed_loop_saturation_judges_two_replicas_when_measured():
    runs = {"default": figures(5.0, 700.0), "llm": figures(6.5, 690.0, ratio=1.2)}
    saturated = {"ratio": 1.93, "ratio_to_probe": 1.7}
    goals = by_name(compare.goals(runs, {}, saturated))
    assert goals[CLOSED_LOOP_SCALING_GOAL]["met"] and RAMP_SCALING_GOAL not in goals
    assert not by_name(compare.goals(runs, {}, {"ratio": 1.8, "ratio_to_probe": 2.0}))[CLOSED_LOOP_SCALING_GOAL]["met"]
    # Began with two running: the probe's one-replica throughput is the only yardstick left.
    assert by_name(compare.goals(runs, {}, {"ratio": None, "ratio_to_probe": 1.95}))[CLOSED_LOOP_SCALING_GOAL]["met"]
    assert not by_name(compare.goals(runs, {}, {"ratio": None, "ratio_to_probe": None}))[CLOSED_LOOP_SCALING_GOAL]["met"]


def test_saturated_scaling_compares_the_two_replica_window_with_the_one_replica_window():
    timeline = [(0.0, 1, 1), (20.0, 1, 2), (40.0, 2, 2)]
    one = [served(i, sent=float(i), ttft=0.0, end=i + 1.0, tokens=100) for i in range(40)]   # 100 tok/s to 40 s
    two = [served(100 + i, sent=40.0 + i / 2, ttft=0.0, end=40.5 + i / 2, tokens=100) for i in range(80)]  # 200 tok/s
    scaling = compare.saturated_scaling(one + two, timeline, end_s=80.0, settle_s=5.0, probe_tok_s=125.0)
    assert scaling["windows"] == {"one": (5.0, 40.0), "two": (45.0, 80.0)}
    assert scaling["one_replica_tok_s"] == pytest.approx(100.0) and scaling["two_replicas_tok_s"] == pytest.approx(200.0)
    assert scaling["ratio"] == pytest.approx(2.0) and scaling["ratio_to_probe"] == pytest.approx(1.6)
    assert scaling["two_running_at_s"] == 40.0
    never = compare.saturated_scaling(one, [(0.0, 1, 1)], end_s=80.0, probe_tok_s=125.0)
    assert never["ratio"] is None and never["ratio_to_probe"] is None and never["windows"] == {"one": None, "two": None}
    from_two = compare.saturated_scaling(two, [(0.0, 2, 2)], end_s=80.0, settle_s=5.0, probe_tok_s=100.0)
    assert from_two["windows"]["one"] is None and from_two["ratio"] is None
    assert from_two["ratio_to_probe"] == pytest.approx(from_two["two_replicas_tok_s"] / 100.0)


# ---- the simulated ramp --------------------------------------------------------------------------------------------
def test_each_policy_is_simulated_with_the_settings_serve_got():
    default, llm = autoscaler_for(config("default")), autoscaler_for(config("llm"))
    assert isinstance(default, RayDefaultAutoscaler) and isinstance(llm, LLMPolicyAutoscaler)
    assert (default.settings.target_ongoing_requests, default.settings.upscale_delay_s,
            default.settings.downscale_delay_s) == (4.0, 2.0, 5.0)
    assert (llm.settings.max_replicas, llm.settings.downscale_delay_s, tuple(llm.settings.top_classes)) == \
           (2, 5.0, ("interactive",))


def test_the_profile_is_rescaled_to_the_measured_capacity():
    engine = engine_config(config("default"), num_kv_blocks=4000)
    assert (engine.max_num_seqs, engine.num_kv_blocks) == (128, 4000)
    lengths = [(256 + 7 * i % 700, 128 + 3 * i % 128) for i in range(64)]
    profile_rps = closed_loop_capacity_rps(MODEL, engine, lengths, concurrency=16)
    assert closed_loop_capacity_rps(scaled_model(MODEL, 2.0), engine, lengths, 16) == pytest.approx(profile_rps / 2)
    model, calibration = calibrated_model(MODEL, engine, lengths, 16, measured_capacity_rps=profile_rps / 1.5)
    assert calibration["step_time_factor"] == pytest.approx(1.5)
    assert closed_loop_capacity_rps(model, engine, lengths, 16) == pytest.approx(profile_rps / 1.5)


def test_a_ramp_above_one_replica_scales_up_after_the_start_delay_and_back_down():
    cfg = config("default", target_ongoing_requests=64.0)  # half the batch: the low load needs one replica
    engine = engine_config(cfg, None)
    shape = RampShape(low_s=20, high_s=60, low_again_s=60, seed=1)
    capacity = closed_loop_capacity_rps(MODEL, engine, [(640, 192)] * 256, concurrency=128)
    planned = shape.workload(capacity).plan()
    requests = sim_requests([(p.send_offset_s, p.class_name, p.prompt_len, p.max_tokens) for p in planned])
    simulated = simulate_ramp(cfg, MODEL, engine, requests, startup_delay_s=15.0)
    assert len(simulated.requests) == len(planned)
    starts = compare.replica_starts(simulated.samples)
    assert starts and starts[0]["start_s"] == pytest.approx(15.0, abs=1.0) and starts[0]["requested_s"] >= 20.0
    assert compare.scale_downs(simulated.samples)
    assert not [r for r in simulated.requests if r.kind == "lost"]


def test_vllm_s_kv_cache_line_is_read_from_the_server_log():
    assert kv_cache_tokens("INFO 11-30 [kv_cache_utils.py:1087] GPU KV cache size: 224,512 tokens\n") == 224512
    assert kv_cache_tokens("nothing here") is None


# ---- the open-loop driver, with a fake client ------------------------------------------------------------------
def test_the_driver_hands_over_each_request_as_it_ends_samples_and_cancels_the_tail(monkeypatch):
    shape = RampShape(low_s=0.2, high_s=0.2, low_again_s=0.2, seed=2)
    planned = shape.workload(25.0).plan()
    hang = planned[-1].index

    async def fake_send(http, options, request, zero):
        await asyncio.sleep(10.0 if request.index == hang else 0.01)
        return RequestRecord(request.index, request.class_name, send_s=request.send_offset_s, end_s=0.0,
                             outcome="completed", output_tokens=request.max_tokens)

    monkeypatch.setattr(ramp_driver, "send", fake_send)
    records, samples = [], []
    still_open = asyncio.run(ramp_driver.drive(planned, ClientOptions("http://fake", "m"),
                                               lambda request, record: records.append(record.index),
                                               lambda: {"running": 1}, samples.append, poll_s=0.05,
                                               tail_timeout_s=0.2))
    assert sorted(records) == sorted(p.index for p in planned if p.index != hang)
    assert [p.index for p in still_open] == [hang]
    assert len(samples) >= 5 and all(s["running"] == 1 for s in samples)
    assert [s["t_s"] for s in samples] == sorted(s["t_s"] for s in samples)


def test_the_closed_loop_driver_keeps_its_clients_busy_until_the_end_and_cancels_the_tail(monkeypatch):
    planned = RampShape(seed=3).probe(concurrency=3, requests=500).plan()
    open_now, most_open, hang = [0], [0], planned[7].index

    async def fake_send(http, options, request, zero):
        open_now[0] += 1
        most_open[0] = max(most_open[0], open_now[0])
        try:
            await asyncio.sleep(10.0 if request.index == hang else 0.02)
        finally:
            open_now[0] -= 1
        return RequestRecord(request.index, request.class_name, send_s=0.0, end_s=0.0, outcome="completed",
                             output_tokens=request.max_tokens)

    monkeypatch.setattr(ramp_driver, "send", fake_send)
    records, samples = [], []
    cancelled = asyncio.run(ramp_driver.drive_closed(planned, 3, 0.5, ClientOptions("http://fake", "m"),
                                                     lambda request, record: records.append(record.index),
                                                     lambda: {"running": 2}, samples.append, poll_s=0.05,
                                                     tail_timeout_s=0.2))
    assert cancelled == 1 and hang not in records
    assert most_open[0] == 3
    # Two clients kept sending for the whole 0.5 s, one request at a time each, in plan order.
    assert 10 <= len(records) <= 55 and records == sorted(records)
    assert len(samples) >= 8
    with pytest.raises(ValueError):
        asyncio.run(ramp_driver.drive_closed(planned, 0, 1.0, ClientOptions("http://fake", "m"), None, None, None))
