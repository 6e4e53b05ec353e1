"""The load driver against the real app (Ray Serve + vLLM CPU engine, tiny model): counts, tokens and
latencies agree with what was planned and with the router's own counters; and the cross-check
against `vllm bench serve` on the same app."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from autoscaling.loadtest.arrivals import poisson
from autoscaling.loadtest.client import ClientOptions
from autoscaling.loadtest.lengths import Uniform
from autoscaling.loadtest.metrics import Slo
from autoscaling.loadtest.runner import run_load
from autoscaling.loadtest.workload import WorkloadSpec, plan_requests
from router_helpers import wait_until_idle

from serve_app.memory.presets import get_preset

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("interactive", "standard", "batch")


def deltas(before: dict, after: dict, counter: str) -> dict[str, int]:
    return {name: after["classes"][name][counter] - before["classes"][name][counter] for name in CLASSES}


def run(spec: WorkloadSpec, options: ClientOptions, slos: dict | None = None):
    return asyncio.run(run_load(spec, options, slos=slos, progress=False, command="test"))


def test_driver_counts_tokens_and_latencies_match_the_server(base_url, model_name, app_config):
    spec = WorkloadSpec(poisson(3.0), {"interactive": 0.3, "standard": 0.4, "batch": 0.3}, prompt_len=Uniform(8, 40),
                        output_len=Uniform(4, 16), num_requests=36, seed=11)
    # key-gold may use interactive; anonymous callers may use up to standard.
    options = ClientOptions(base_url, model_name, api_keys={"interactive": "key-gold"}, timeout_s=120)
    slos = {c.name: Slo(c.ttft_slo_s, c.tpot_slo_s) for c in app_config.priority_classes}
    run(WorkloadSpec(poisson(50), {"standard": 1}, Uniform(8, 9), Uniform(4, 5), num_requests=2), options)  # warm
    before = wait_until_idle(base_url)
    result = run(spec, options, slos)
    after = wait_until_idle(base_url)

    planned = plan_requests(spec)
    sent = Counter(p.class_name for p in planned)
    assert set(sent) == set(CLASSES)  # the mix reached every class
    assert {name: s["sent"] for name, s in result.classes.items()} == dict(sent)
    for name, stats in result.classes.items():
        assert stats["completed"] == stats["sent"], (name, stats)
        assert stats["refused_429"] == stats["refused_503"] == stats["failed"] == 0, (name, stats)
    assert result.overall["sent"] == sum(s["sent"] for s in result.classes.values()) == len(planned)

    # ignore_eos and token-id prompts: the server's usage equals what was planned, request by request.
    by_index = {p.index: p for p in planned}
    for record in result.records:
        plan = by_index[record.index]
        assert (record.output_tokens, record.prompt_tokens) == (plan.max_tokens, plan.prompt_len), record
        assert 0 < record.ttft_s <= record.e2e_s <= record.end_s - record.send_s
        assert 1 <= len(record.token_times_s) <= record.output_tokens  # the ingress may merge tokens per event
    for name in CLASSES:
        expected_tokens = sum(p.max_tokens for p in planned if p.class_name == name)
        assert result.classes[name]["output_token_throughput_tps"] * result.duration_s == pytest.approx(expected_tokens)
        assert result.classes[name]["ttft_s"]["p50"] <= result.classes[name]["e2e_s"]["p50"]

    # The router's per-class counters moved by exactly what the driver saw served.
    assert deltas(before, after, "served") == {name: result.classes[name]["completed"] for name in CLASSES}
    assert deltas(before, after, "admitted") == dict(sent)
    assert 0 < result.mean_in_flight and result.offered_rate_rps == pytest.approx(3.0, rel=0.1)
    json.loads(result.to_json())


def test_priority_as_header_and_refusals_are_counted(base_url, model_name):
    """The class travels in x-priority; asking above the caller's ceiling is a 403, counted as failed."""
    spec = WorkloadSpec(poisson(4.0), {"standard": 0.5, "interactive": 0.5}, Uniform(8, 9), Uniform(2, 3),
                        num_requests=10, seed=2)
    before = wait_until_idle(base_url)
    result = run(spec, ClientOptions(base_url, model_name, priority_header=True, timeout_s=120))  # anonymous
    after = wait_until_idle(base_url)
    inter, standard = result.classes["interactive"], result.classes["standard"]
    assert inter["failed"] == inter["sent"] > 0 and inter["completed"] == 0
    assert all(r.status == 403 and r.error_code == "priority_above_ceiling"
               for r in result.records if r.class_name == "interactive")
    assert standard["completed"] == standard["sent"] > 0
    assert deltas(before, after, "served") == {"interactive": 0, "standard": standard["sent"], "batch": 0}


def test_cross_check_against_vllm_bench_serve(base_url, model_name, app_config, tmp_path):
    """Both tools at the same low Poisson rate, same N and fixed lengths, anonymous (class standard).

    Only request and output-token throughput are compared here: at 2 req/s both are set by the
    arrival schedule (both tools place the last arrival at N / rate), which the CPU run can check.
    TTFT/TPOT percentiles are compared in the GPU run only: on this 2-core machine the server's
    engine, Ray's proxy and the load tool share two cores, so per-request latencies of two
    separate runs move by more than 5% from scheduling noise alone, whichever tool measures them.
    Measured here (this workload, two back-to-back runs of the pair): throughput +0.6% / -0.2%,
    TTFT p50 -19% / +10%, TPOT p50 -36% / +28% (ours vs vLLM's; the sign flips, noise, not bias).
    Closed loop at concurrency 4, where the server sets the throughput: +4.8% / -8.0%.
    """
    out = tmp_path / "cross"
    command = [sys.executable, str(ROOT / "benchmarks" / "loadtest_vs_vllm_bench.py"), "--base-url", base_url,
               "--model", model_name, "--tokenizer", str(app_config.model.resolved_path()), "--input-len", "32",
               "--output-len", "16", "--num-prompts", "40", "--request-rate", "2", "--seed", "3",
               "--metrics", "request_throughput,output_throughput", "--out", str(out), "--timeout", "400"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    report_path = out / "loadtest_vs_vllm_bench.json"
    assert report_path.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    print(done.stdout)
    assert report["counts"]["vllm_bench"] == report["counts"]["loadtest"] == {"completed": 40, "failed": 0}
    for name, row in report["comparison"].items():
        assert abs(row["rel_diff"]) <= 0.05, (name, row)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "vllm" in report["commands"]["vllm_bench"] and "autoscaling.loadtest" in report["commands"]["loadtest"]


def test_preset_workload_through_the_cli_counts_the_slot_wait(base_url, model_name, app_config, tmp_path):
    """`--workload preset`: the preset's lengths scaled to the app's context, its SLO, and with
    `--latency-from-arrival` under `--max-concurrency` the wait for a free slot is part of each TTFT."""
    out = tmp_path / "preset.json"
    context = app_config.engine.max_model_len
    command = [sys.executable, "-m", "autoscaling.loadtest", "run", "--base-url", base_url, "--model", model_name,
               "--workload", "preset", "--preset", "interactive", "--max-model-len", str(context),
               "--arrival", "poisson:inf", "--num-requests", "6", "--max-concurrency", "2", "--latency-from-arrival",
               "--api-key", "key-gold", "--priority-field", "none", "--seed", "5", "--save-requests", "--no-progress",
               "--timeout", "300", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    (stats,) = result["classes"].values()
    assert stats["sent"] == stats["completed"] == 6, stats
    records = sorted(result["requests"], key=lambda r: r["end_s"])
    assert all(r["prompt_tokens"] + r["output_tokens"] <= context for r in records)
    assert len({r["prompt_tokens"] for r in records}) > 1  # log-normal lengths, not one fixed length
    # All six arrive at once and two run at a time: the last pair waited for two others to finish.
    first_done = records[0]["e2e_s"]
    assert all(r["ttft_s"] >= first_done for r in records[2:]), [(r["ttft_s"], r["e2e_s"]) for r in records]
    preset = get_preset("interactive")
    assert stats["slo"] == Slo(preset.ttft_s, preset.tpot_s).to_dict()
