"""Workload of the load driver: seeded arrival schedules, length distributions, traces, spec strings."""
from __future__ import annotations

import json
import math
import random
import statistics

import pytest

from autoscaling.loadtest.arrivals import gamma, poisson, ramp, step
from autoscaling.loadtest.lengths import Fixed, LogNormal, Trace, Uniform, parse_trace_lines, read_trace
from autoscaling.loadtest.workload import (SpecError, WorkloadSpec, parse_arrival, parse_length, parse_mix,
                                           parse_output_length, parse_slo, plan_requests)


def gaps(offsets: list[float]) -> list[float]:
    return [b - a for a, b in zip([0.0, *offsets], offsets)]


def cv(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.fmean(values)


# ---- arrivals ---------------------------------------------------------------------------------
def test_poisson_mean_rate_and_exponential_gaps_over_a_long_window():
    offsets = poisson(4.0).offsets(random.Random(1), duration_s=5000, num_requests=None)
    assert len(offsets) / 5000 == pytest.approx(4.0, rel=0.03)  # 20k arrivals: sd 0.7%
    assert cv(gaps(offsets)) == pytest.approx(1.0, abs=0.03)
    assert offsets == sorted(offsets) and offsets[-1] <= 5000


def test_gamma_is_bursty_at_the_same_mean_rate():
    offsets = gamma(4.0, cv=3.0).offsets(random.Random(2), duration_s=None, num_requests=20000)
    intervals = gaps(offsets)
    assert cv(intervals) == pytest.approx(3.0, rel=0.1)
    # With a count, the last arrival is due at count / rate (as vllm bench serve rescales).
    assert offsets[-1] == pytest.approx(20000 / 4.0)


def test_gamma_cv_below_one_is_smoother_than_poisson():
    intervals = gaps(gamma(10.0, cv=0.25).offsets(random.Random(3), duration_s=None, num_requests=5000))
    assert cv(intervals) == pytest.approx(0.25, rel=0.1)


def test_schedules_are_deterministic_per_seed():
    a = poisson(3).offsets(random.Random(7), duration_s=30, num_requests=None)
    b = poisson(3).offsets(random.Random(7), duration_s=30, num_requests=None)
    c = poisson(3).offsets(random.Random(8), duration_s=30, num_requests=None)
    assert a == b and a != c


def test_infinite_rate_sends_everything_at_once_and_needs_a_count():
    assert poisson(math.inf).offsets(random.Random(0), duration_s=None, num_requests=3) == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="number of requests"):
        poisson(math.inf).offsets(random.Random(0), duration_s=10, num_requests=None)


def test_count_and_duration_both_bound_a_run():
    offsets = poisson(100).offsets(random.Random(0), duration_s=1.0, num_requests=10)
    assert len(offsets) == 10 and offsets[-1] < 1.0  # count reached first; no rescaling then


def test_step_schedule_rates_per_segment():
    offsets = step([(1000, 2.0), (1000, 8.0)]).offsets(random.Random(4), duration_s=None, num_requests=None)
    first = sum(t < 1000 for t in offsets)
    assert first / 1000 == pytest.approx(2.0, rel=0.07)
    assert (len(offsets) - first) / 1000 == pytest.approx(8.0, rel=0.04)
    assert max(offsets) < 2000


def test_ramp_rate_rises_linearly():
    schedule = ramp(1.0, 11.0, 2000)
    offsets = schedule.offsets(random.Random(5), duration_s=None, num_requests=None)
    # Expected counts per quarter: integral of 1 + 10 t / 2000 over each 500 s.
    for quarter in range(4):
        lo, hi = quarter * 500, (quarter + 1) * 500
        expected = (hi - lo) + 10 * (hi * hi - lo * lo) / (2 * 2000)
        observed = sum(lo <= t < hi for t in offsets)
        assert observed == pytest.approx(expected, rel=0.08), quarter
    assert schedule.rate_at(1000) == pytest.approx(6.0) and schedule.rate_at(2000) == 0.0


def test_schedule_arguments_are_checked():
    for bad in (lambda: poisson(0), lambda: gamma(1, 0), lambda: step([]), lambda: step([(0, 1)]),
                lambda: ramp(0, 0, 10), lambda: ramp(1, 2, 0)):
        with pytest.raises(ValueError):
            bad()


# ---- lengths ------------------------------------------------------------------------------------
def test_uniform_lengths_cover_the_closed_range():
    rng = random.Random(0)
    values = [Uniform(3, 6).sample(rng, i) for i in range(2000)]
    assert set(values) == {3, 4, 5, 6}


def test_lognormal_mean_and_clipping():
    rng = random.Random(0)
    values = [LogNormal(200, 0.5).sample(rng, i) for i in range(20000)]
    assert statistics.fmean(values) == pytest.approx(200, rel=0.02)
    clipped = [LogNormal(200, 1.5, min=50, max=300).sample(rng, i) for i in range(2000)]
    assert min(clipped) == 50 and max(clipped) == 300


def test_trace_rows_and_errors(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt_len": 5, "output_len": 7, "priority": "batch"}\n\n{"prompt": "hi there", "output_len": 2}\n')
    trace = read_trace(path)
    assert [trace.sample(random.Random(0), 0), trace.output().sample(random.Random(0), 1)] == [5, 2]
    assert trace.row(2).priority == "batch"  # cycles
    for line, message in (('{"output_len": 3}', "prompt_len or prompt"), ('{"prompt_len": 0, "output_len": 3}',
                          "prompt_len"), ('{"prompt_len": 3}', "output_len"), ("[1]", "object"), ("{", "not JSON")):
        with pytest.raises(ValueError, match=message):
            parse_trace_lines([line])
    with pytest.raises(ValueError, match="no requests"):
        parse_trace_lines(["", " "])


# ---- the planned requests ------------------------------------------------------------------------
def spec(**overrides) -> WorkloadSpec:
    fields = {"arrival": poisson(5), "class_mix": {"interactive": 0.25, "batch": 0.75}, "prompt_len": Uniform(4, 9),
              "output_len": Fixed(6), "num_requests": 4000, "seed": 3}
    return WorkloadSpec(**{**fields, **overrides})


def test_plan_is_deterministic_with_exact_lengths_and_mix():
    planned = plan_requests(spec())
    assert planned == plan_requests(spec())
    assert len(planned) == 4000
    assert all(len(p.prompt) == p.prompt_len and 4 <= p.prompt_len <= 9 and p.max_tokens == 6 for p in planned)
    assert all(10 <= t < 1000 for p in planned[:50] for t in p.prompt)
    share = sum(p.class_name == "interactive" for p in planned) / len(planned)
    assert share == pytest.approx(0.25, abs=0.025)
    assert [p.send_offset_s for p in planned] == sorted(p.send_offset_s for p in planned)


def test_requests_do_not_depend_on_the_rate():
    slow, fast = plan_requests(spec(arrival=poisson(1))), plan_requests(spec(arrival=poisson(50)))
    assert [(p.class_name, p.prompt, p.max_tokens) for p in slow] == [(p.class_name, p.prompt, p.max_tokens)
                                                                     for p in fast]
    assert slow[-1].send_offset_s == pytest.approx(4000.0) and fast[-1].send_offset_s == pytest.approx(80.0)


def test_trace_priority_and_text_prompts_override():
    trace = parse_trace_lines([json.dumps({"prompt_len": 3, "output_len": 4, "priority": "batch"}),
                               json.dumps({"prompt": "a b", "output_len": 9})])
    planned = plan_requests(spec(prompt_len=trace, output_len=trace.output(), class_mix={"interactive": 1},
                                 num_requests=4))
    assert [(p.class_name, p.prompt_len, p.max_tokens) for p in planned] == [
        ("batch", 3, 4), ("interactive", None, 9), ("batch", 3, 4), ("interactive", None, 9)]
    assert planned[1].prompt == "a b"


def test_workload_needs_a_length_of_run():
    with pytest.raises(SpecError, match="duration or a number"):
        spec(num_requests=None)
    assert plan_requests(spec(num_requests=None, arrival=step([(2, 1)])))  # a step schedule has its own length


# ---- spec strings --------------------------------------------------------------------------------
def test_arrival_specs():
    assert parse_arrival("poisson:4").to_dict() == {"kind": "poisson", "rate_rps": 4.0, "cv": 1.0}
    assert parse_arrival("poisson:inf").to_dict()["rate_rps"] is None
    assert parse_arrival("gamma:4:cv=2").to_dict() == {"kind": "gamma", "rate_rps": 4.0, "cv": 2.0}
    assert parse_arrival("step:30x2,30x8").segments == ((30.0, 2.0), (30.0, 8.0))
    assert parse_arrival("ramp:1:10:60").to_dict() == {"kind": "ramp", "start_rate_rps": 1.0, "end_rate_rps": 10.0,
                                                       "duration_s": 60.0}


@pytest.mark.parametrize("text", ["poisson", "poisson:x", "poisson:-1", "gamma:4:shape=2", "step:30-2",
                                  "ramp:1:10", "zipf:3", "gamma:4:cv=0"])
def test_bad_arrival_specs_name_the_spec(text):
    with pytest.raises(SpecError, match="arrival"):
        parse_arrival(text)


def test_length_specs(tmp_path):
    assert parse_length("fixed:256") == Fixed(256)
    assert parse_length("uniform:64:512") == Uniform(64, 512)
    assert parse_length("lognormal:256:0.5") == LogNormal(256, 0.5)
    assert parse_length("lognormal:256:0.5:min=16:max=1024") == LogNormal(256, 0.5, 16, 1024)
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt_len": 5, "output_len": 7}\n')
    prompt = parse_length(f"trace:{path}")
    assert isinstance(prompt, Trace) and parse_output_length("trace", prompt).sample(random.Random(0), 0) == 7
    assert parse_output_length(f"trace:{path}", Fixed(1)).sample(random.Random(0), 0) == 7


@pytest.mark.parametrize("text", ["fixed", "fixed:0", "fixed:2.5", "uniform:9:3", "lognormal:256",
                                  "lognormal:256:0.5:clip=3", "trace:/nonexistent.jsonl", "normal:3"])
def test_bad_length_specs_name_the_spec(text):
    with pytest.raises(SpecError, match="length"):
        parse_length(text)


def test_output_trace_needs_a_prompt_trace():
    with pytest.raises(SpecError, match="trace"):
        parse_output_length("trace", Fixed(3))


def test_mix_and_slo_specs():
    assert parse_mix("interactive=0.2,batch=0.8") == {"interactive": 0.2, "batch": 0.8}
    assert parse_mix('{"a": 1, "b": 3}') == {"a": 1.0, "b": 3.0}
    assert parse_mix("batch") == {"batch": 1.0}
    for bad in ("a=x", "a=0,b=0", "=1", "a=-1,b=2", "{bad"):
        with pytest.raises(SpecError, match="mix"):
            parse_mix(bad)
    assert parse_slo("interactive=0.5,0.1") == ("interactive", 0.5, 0.1)
    assert parse_slo("batch=-,1") == ("batch", None, 1.0)
    for bad in ("interactive=0.5", "0.5,0.1", "a=0,1", "a=x,1"):
        with pytest.raises(SpecError, match="slo"):
            parse_slo(bad)
