"""benchmarks/cache_routing_h200.py without a GPU: the KV sizing, the configs, the prefix_repetition
command, and `summarize` over part files made by the part writers' own functions from synthetic runs."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from autoscaling.bench import cache_routing as bench
from autoscaling.bench.vllm_bench import bench_serve_command, prefix_repetition_command
from autoscaling.loadtest.metrics import RequestRecord, Slo
from autoscaling.loadtest.runner import LoadTestResult
from autoscaling.loadtest.shared_prefix import planned_ideal_hit_rate
from serve_app.config import parse_config
from serve_app.statistics import percentile

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cache_routing_h200.py"
SMALL = bench.RoutingWorkload(tenants=4, prefix_len=64, suffix_len=16, output_len=8)


def script():
    spec = importlib.util.spec_from_file_location("cache_routing_h200", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prefixes_fit_two_replicas_kv_caches_but_not_one():
    workload = bench.RoutingWorkload()
    tokens = bench.kv_cache_tokens(workload, bench.MAX_NUM_SEQS)
    prefix_room = tokens - bench.MAX_NUM_SEQS * (workload.suffix_len + workload.output_len)
    assert tokens % 16 == 0
    assert prefix_room < workload.prefix_tokens() < 2 * prefix_room
    assert workload.prefix_len + workload.suffix_len + workload.output_len < bench.MAX_MODEL_LEN
    assert bench.kv_cache_memory_bytes(tokens, 524288) == tokens * 524288


def test_routing_config_is_a_valid_app_config_with_the_kv_size(tmp_path):
    config = bench.routing_config(tmp_path, 8000, bench.BASELINE, 123 * 2**20)
    parsed = parse_config(config)  # the prefix modes' names land with the routing work
    assert parsed.engine.extra["kv_cache_memory_bytes"] == 123 * 2**20
    assert parsed.replicas.num_replicas == 2 and parsed.router.routing == bench.BASELINE
    with pytest.raises(ValueError, match="routing mode"):
        bench.routing_config(tmp_path, 8000, "round_robin", 1)
    shared = parse_config(bench.routing_config(tmp_path, 8000, bench.BASELINE, 123 * 2**20, share_one_gpu=True))
    assert shared.replicas.num_gpus == 0.5 and shared.engine.gpu_memory_utilization < 0.5
    assert shared.engine.extra["kv_cache_memory_bytes"] == 123 * 2**20  # the same caches as on two GPUs
    fairness = bench.fairness_config(tmp_path, 8000)
    assert fairness["replicas"]["num_replicas"] == 1
    assert {k["name"]: k["weight"] for k in fairness["auth"]["keys"]} == bench.FAIRNESS_TENANTS


def test_fairness_loads_are_twice_capacity_with_the_light_tenant_at_one_rate():
    specs = bench.fairness_specs(10.0, 30)
    assert specs["contended"].arrival.rate_rps == 20.0 and specs["contended"].tenant_weights == (10.0, 1.0)
    assert specs["light_alone"].arrival.rate_rps == pytest.approx(20.0 / 11)
    assert specs["weighted"].tenant_names() == ["gold", "silver"] and specs["weighted"].tenant_weights is None


def test_prefix_repetition_command_parses_with_vllms_own_parser(tmp_path):
    serve = pytest.importorskip("vllm.benchmarks.serve")
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    serve.add_cli_args(parser)
    command = prefix_repetition_command("http://x", "m", "tok", tmp_path, "r.json", prefix_len=3000, suffix_len=64,
                                        num_prefixes=40, output_len=32, num_prompts=400, request_rate="4")
    args = parser.parse_args(command[5:])
    assert (args.dataset_name, args.prefix_repetition_prefix_len, args.prefix_repetition_suffix_len,
            args.prefix_repetition_num_prefixes, args.prefix_repetition_output_len) == \
        ("prefix_repetition", 3000, 64, 40, 32)
    assert args.ignore_eos and args.num_prompts == 400 and args.result_filename == "r.json"
    random = parser.parse_args(bench_serve_command("http://x", "m", "tok", tmp_path, "q.json", input_len=5,
                                                   output_len=6, num_prompts=7, request_rate="inf")[5:])
    assert (random.dataset_name, random.random_input_len, random.random_output_len) == ("random", 5, 6)


# ---- summarize over synthetic part files ----------------------------------------------------------
def fake_result(spec, ttft_s: float, *, completed_share: float = 1.0, late_tenant: str | None = None) -> dict:
    """A load test of `spec` where every request's first token comes `ttft_s` after its send and the
    rest 1 s later; the last (1 - completed_share) of the requests are refused; `late_tenant`'s requests end
    after the arrivals, alternately."""
    planned = spec.plan()
    window = planned[-1].send_offset_s
    records = []
    for i, p in enumerate(planned):
        if i >= completed_share * len(planned):
            records.append(RequestRecord(p.index, p.class_name, p.send_offset_s, p.send_offset_s, "refused",
                                         status=503, tenant=p.tenant))
            continue
        first = p.send_offset_s + ttft_s
        end = window + 5 if p.tenant == late_tenant and i % 2 else first + 1
        records.append(RequestRecord(p.index, p.class_name, p.send_offset_s, end, "completed", status=200,
                                     first_token_s=first, token_times_s=[first, end], output_tokens=p.max_tokens,
                                     tenant=p.tenant))
    slos = {bench.CLASS["name"]: Slo(bench.CLASS["ttft_slo_s"], None)}
    result = LoadTestResult.from_records(records, spec, slos, command="synthetic", base_url="u", model="m",
                                         planned=planned)
    return result.to_dict(include_requests=True)


def counters(queries: float, hits: float) -> dict:
    return {"replicas": {"r0": {"prefix_cache_queries": queries, "prefix_cache_hits": hits}}}


def routing_part(mode: str, ttft_s: float, completed_share: float, hit_of_ideal: float, no_prefix_ttft_s: float):
    shared = fake_result(SMALL.shared(4.0, 20, seed=1), ttft_s, completed_share=completed_share)
    ideal = shared["workload"]["ideal_prefix_hit_rate"]
    hit = bench.measured_hit_rate(counters(100, 10), counters(1100, 10 + 1000 * ideal * hit_of_ideal))
    return {"part": f"routing-{mode}", "gpu": "fake", "mode": mode, "script": "x", "server_command": "y",
            "shared_prefix": bench.run_entry(shared, hit),
            "no_prefix": bench.run_entry(fake_result(SMALL.no_prefix(3.0, 20), no_prefix_ttft_s))}


def fairness_part() -> dict:
    specs = bench.fairness_specs(2.0, 30, prompt_len=32, output_len=8)
    return {"part": "fairness", "gpu": "fake",
            "contended": bench.run_entry(fake_result(specs["contended"], 0.5)),
            "light_alone": bench.run_entry(fake_result(specs["light_alone"], 0.5)),
            "weighted": bench.run_entry(fake_result(specs["weighted"], 0.5, late_tenant="silver"))}


def write_parts(out: Path, parts: list[dict]) -> None:
    for part in parts:
        (out / f"{part['part']}.json").write_text(json.dumps(part))


def test_summarize_judges_issue_17s_goals_from_the_part_files(tmp_path):
    baseline = routing_part(bench.BASELINE, 2.0, 0.6, 0.3, 0.200)
    approximate = routing_part(bench.APPROXIMATE, 1.0, 0.9, 0.6, 0.200)
    precise = routing_part(bench.PRECISE, 0.3, 1.0, 0.95, 0.201)
    fairness = fairness_part()
    write_parts(tmp_path, [baseline, approximate, precise, fairness])
    summary = script().summarize(tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert set(summary) >= {"gpu", "commands", "goals"} and summary["gpu"] == "fake"
    goals = summary["goals"]
    assert [g["met"] for g in goals] == [True] * 7, goals
    p90 = lambda part: percentile(part["shared_prefix"]["ttfts_s"], 90)  # noqa: E731
    assert goals[0]["measured"] == pytest.approx(p90(baseline) / p90(precise), abs=1e-3)
    assert goals[0]["measured"] == pytest.approx(2.0 / 0.3, rel=0.01)
    tps = lambda part: part["shared_prefix"]["overall"]["output_token_throughput_tps"]  # noqa: E731
    assert goals[1]["measured"] == pytest.approx(tps(precise) / tps(baseline), abs=1e-3)
    assert goals[2]["measured"] == pytest.approx(0.95, abs=1e-3)
    assert goals[4]["measured"] == pytest.approx(0.201 / 0.200, abs=1e-3)
    served = fairness["weighted"]["served_tokens_in_window"]
    assert goals[6]["measured"] == pytest.approx(served["gold"] / served["silver"], abs=1e-3)
    assert set(summary["routing_modes"]) == set(bench.ROUTING_MODES)
    assert (tmp_path / "ttft_cdf_by_routing_mode.png").exists() and (tmp_path / "tenant_goodput.png").exists()


def test_goals_fail_past_their_thresholds(tmp_path):
    baseline = routing_part(bench.BASELINE, 1.0, 0.9, 0.3, 0.200)
    precise = routing_part(bench.PRECISE, 0.3, 1.0, 0.8, 0.210)  # 3.3x, 1.1x, 0.8 of ideal, p99 +5%
    goals = bench.routing_goals({bench.BASELINE: baseline, bench.PRECISE: precise})
    assert [g["met"] for g in goals] == [False, False, False, True, False]
    weighted = {"contended": {"tenants": {"light": {"goodput_in_window_rps": 0.85}}},
                "light_alone": {"tenants": {"light": {"goodput_in_window_rps": 1.0}}},
                "weighted": {"served_tokens_in_window": {"gold": 170, "silver": 100}}}
    assert [g["met"] for g in bench.fairness_goals(weighted)] == [False, False]
    weighted["weighted"]["served_tokens_in_window"]["gold"] = 185
    weighted["contended"]["tenants"]["light"]["goodput_in_window_rps"] = 0.9
    assert [g["met"] for g in bench.fairness_goals(weighted)] == [True, True]


def test_missing_parts_are_unmet_goals(tmp_path):
    summary = script().summarize(tmp_path)
    assert summary["goals"] and not any(g["met"] for g in summary["goals"])


def test_ideal_hit_rate_of_the_routing_workload_is_high_and_of_no_prefix_zero():
    shared = SMALL.shared(4.0, 20, seed=1).plan()
    assert planned_ideal_hit_rate(shared) > 0.5
    assert planned_ideal_hit_rate(SMALL.no_prefix(3.0, 20).plan()) == 0


def test_hit_rate_falls_back_to_the_replicas_rate_without_counters():
    after = {"replicas": {"a": {"prefix_cache_hit_rate": 0.5, "predicted_prefix_hit_rate": 0.6},
                          "b": {"prefix_cache_hit_rate": 0.7}}}
    measured = bench.measured_hit_rate(None, after)
    assert measured["hit_rate"] == pytest.approx(0.6) and measured["predicted"] == pytest.approx(0.6)
    assert bench.measured_hit_rate(counters(0, 0), counters(200, 150))["hit_rate"] == pytest.approx(0.75)
