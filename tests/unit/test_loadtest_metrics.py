"""Per-class statistics of the load driver, on small hand-computed cases."""
from __future__ import annotations

import pytest

from autoscaling.loadtest.arrivals import poisson
from autoscaling.loadtest.lengths import Fixed
from autoscaling.loadtest.metrics import RequestRecord, Slo, all_stats, class_stats, mean_in_flight
from autoscaling.loadtest.runner import LoadTestResult
from autoscaling.loadtest.workload import WorkloadSpec


def done(index, name, send, tokens, output_tokens, prompt_tokens=10, end=None):
    return RequestRecord(index, name, send, end if end is not None else tokens[-1], "completed", 200, tokens[0],
                         list(tokens), output_tokens, prompt_tokens)


RECORDS = [
    done(0, "interactive", 0.0, [0.5, 0.7, 0.9, 1.3], 4, end=1.35),  # ttft .5, e2e 1.3, tpot .8/3
    done(1, "interactive", 1.0, [1.2, 1.3], 2, prompt_tokens=20),     # ttft .2, e2e .3, tpot .1
    RequestRecord(2, "interactive", 2.0, 2.1, "refused", 429, retry_after_s=1.0),
    done(3, "batch", 0.5, [2.5], 1),                                  # ttft 2, one token: no tpot
    RequestRecord(4, "batch", 1.0, 1.5, "failed", 500, error="boom"),
    RequestRecord(5, "batch", 3.0, 4.0, "refused", 503),
]
SLOS = {"interactive": Slo(0.3, 0.2), "batch": Slo(2.0, 1.0)}


def test_record_latencies():
    a = RECORDS[0]
    assert (a.ttft_s, a.e2e_s) == (0.5, 1.3)
    assert a.tpot_s == pytest.approx(0.8 / 3)
    assert a.itls_s == pytest.approx([0.2, 0.2, 0.4])
    assert RECORDS[3].tpot_s is None and RECORDS[2].ttft_s is None


def test_class_stats_by_hand():
    stats = all_stats(RECORDS, 4.0, SLOS)
    inter = stats["classes"]["interactive"]
    assert {k: inter[k] for k in ("sent", "completed", "refused_429", "refused_503", "failed")} == {
        "sent": 3, "completed": 2, "refused_429": 1, "refused_503": 0, "failed": 0}
    assert inter["ttft_s"]["mean"] == pytest.approx(0.35)
    assert inter["ttft_s"]["p50"] == pytest.approx(0.35)
    assert inter["ttft_s"]["p90"] == pytest.approx(0.47)
    assert inter["ttft_s"]["p99"] == pytest.approx(0.497)
    assert inter["tpot_s"]["p50"] == pytest.approx((0.8 / 3 + 0.1) / 2)
    assert inter["itl_s"]["mean"] == pytest.approx(0.225)
    assert inter["itl_s"]["p90"] == pytest.approx(0.34)
    assert inter["e2e_s"]["p50"] == pytest.approx(0.8)
    assert inter["request_throughput_rps"] == pytest.approx(0.5)
    assert inter["output_token_throughput_tps"] == pytest.approx(6 / 4)
    assert inter["input_token_throughput_tps"] == pytest.approx(30 / 4)
    assert inter["goodput_rps"] == pytest.approx(0.25)  # only request 1 meets TTFT 0.3 s
    assert inter["slo"] == {"ttft_s": 0.3, "tpot_s": 0.2}

    batch = stats["classes"]["batch"]
    assert (batch["sent"], batch["completed"], batch["refused_503"], batch["failed"]) == (3, 1, 1, 1)
    assert batch["tpot_s"] == {"mean": None, "p50": None, "p90": None, "p99": None}
    assert batch["goodput_rps"] == pytest.approx(0.25)  # TTFT exactly at the 2 s target counts; no TPOT

    overall = stats["overall"]
    assert (overall["sent"], overall["completed"], overall["refused_429"], overall["refused_503"],
            overall["failed"]) == (6, 3, 1, 1, 1)
    assert overall["goodput_rps"] == pytest.approx(0.5)  # each request judged by its own class's SLO
    assert overall["slo"] == {"ttft_s": None, "tpot_s": None}
    assert list(stats["classes"]) == ["interactive", "batch"]


def test_slo_misses_say_which_target_each_completed_request_missed():
    assert all_stats(RECORDS, 4.0, SLOS)["overall"]["slo_misses"] == {"ttft_only": 0, "tpot_only": 0, "both": 1}
    looser_ttft = {"interactive": Slo(0.6, 0.2), "batch": Slo(1.0, 1.0)}  # request 0 slow only; 3 late only
    assert class_stats(RECORDS, 4.0, looser_ttft)["slo_misses"] == {"ttft_only": 1, "tpot_only": 1, "both": 0}
    no_first_token = RequestRecord(6, "batch", 0.0, 1.0, "completed", 200, None, [1.0], 0, 10)
    assert class_stats([no_first_token], 1.0, {})["slo_misses"]["ttft_only"] == 1  # as meets_slo judges it
    for slos in (SLOS, looser_ttft, {}):  # every completed request either met its SLO or missed a target
        stats = class_stats(RECORDS, 4.0, slos)
        assert stats["goodput_rps"] * 4.0 + sum(stats["slo_misses"].values()) == stats["completed"]


def test_goodput_without_slo_counts_every_completed_request():
    stats = class_stats(RECORDS, 4.0, {})
    assert stats["goodput_rps"] == stats["request_throughput_rps"] == pytest.approx(0.75)


def test_tpot_target_alone():
    assert Slo(None, 0.2).met_by(RECORDS[1]) and not Slo(None, 0.2).met_by(RECORDS[0])
    assert not Slo().met_by(RECORDS[2])


def test_a_completed_request_without_a_first_token_misses_even_without_a_ttft_target():
    # serve_app.statistics.meets_slo: no first token is a miss, whatever the targets.
    empty = RequestRecord(6, "batch", 0.0, 1.0, "completed", 200, None, [1.0], 0, 10)
    assert not Slo().met_by(empty) and not Slo(None, 0.2).met_by(empty)


def test_mean_in_flight_is_the_time_average_of_open_requests():
    # Open times: 1.35 + 0.3 + 0.1 + 2.0 + 0.5 + 1.0 = 5.25 over 4 s.
    assert mean_in_flight(RECORDS, 4.0) == pytest.approx(5.25 / 4)
    assert mean_in_flight([], 0.0) == 0.0


def test_result_json_shape():
    spec = WorkloadSpec(poisson(2.0), {"interactive": 0.5, "batch": 0.5}, Fixed(10), Fixed(4), num_requests=6)
    result = LoadTestResult.from_records(RECORDS, spec, SLOS, command="x", base_url="u", model="m")
    out = result.to_dict(include_requests=True)
    assert out["kind"] == "load_test" and out["duration_s"] == 4.0
    assert out["offered_rate_rps"] == pytest.approx(6 / 3.0)  # six sends over a 3 s window
    assert out["workload"]["arrival"] == {"kind": "poisson", "rate_rps": 2.0, "cv": 1.0}
    assert out["workload"]["class_mix"] == {"interactive": 0.5, "batch": 0.5}
    assert set(out["overall"]) == {"sent", "completed", "refused_429", "refused_503", "failed", "ttft_s", "tpot_s",
                                   "itl_s", "e2e_s", "request_throughput_rps", "output_token_throughput_tps",
                                   "input_token_throughput_tps", "goodput_rps", "slo_misses", "slo"}
    assert [r["outcome"] for r in out["requests"]] == ["completed", "completed", "refused", "completed", "failed",
                                                       "refused"]
    assert "requests" not in result.to_dict()
