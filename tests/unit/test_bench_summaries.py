"""The pure parts of the benchmark package (autoscaling/bench), on results shaped like `vllm bench serve`'s saved JSON."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from autoscaling.bench import host
from autoscaling.bench import priority_load as pv
from autoscaling.bench import priority_report as pr
from autoscaling.bench import prometheus_metrics as pm
from autoscaling.bench import result_summaries as bs
from autoscaling.bench.samplers import PeakSampler


def bench_json(num_prompts=10, request_rate="inf", duration=20.0, errors=None, ttfts=None, goodput=None,
               detailed=True, output_len=256) -> dict:
    """A result as `vllm bench serve --save-result [--save-detailed]` writes it."""
    errors = errors if errors is not None else [""] * num_prompts
    output_lens = [0 if e else output_len for e in errors]
    completed = sum(1 for n in output_lens if n)
    result = {"date": "20261123-000000", "endpoint_type": "openai", "backend": "openai", "label": None,
              "model_id": "llama2-7b-awq", "tokenizer_id": "/tmp/models/llama2-7b", "num_prompts": num_prompts,
              "request_rate": request_rate, "burstiness": 1.0, "max_concurrency": None, "duration": duration,
              "completed": completed, "failed": num_prompts - completed, "total_input_tokens": 256 * completed,
              "total_output_tokens": sum(output_lens), "request_throughput": completed / duration,
              "request_goodput": goodput, "output_throughput": sum(output_lens) / duration,
              "total_token_throughput": (256 * completed + sum(output_lens)) / duration,
              "max_output_tokens_per_s": 100.0, "max_concurrent_requests": 10, "rtfx": 0.0,
              "mean_ttft_ms": 150.0, "median_ttft_ms": 120.0, "std_ttft_ms": 10.0, "p50_ttft_ms": 120.0,
              "p90_ttft_ms": 200.0, "p99_ttft_ms": 240.0, "mean_tpot_ms": 40.0, "median_tpot_ms": 40.0,
              "std_tpot_ms": 1.0, "p50_tpot_ms": 40.0, "p90_tpot_ms": 45.0, "p99_tpot_ms": 50.0,
              "mean_e2el_ms": 9000.0, "median_e2el_ms": 9000.0, "std_e2el_ms": 5.0, "p50_e2el_ms": 9000.0,
              "p90_e2el_ms": 9500.0, "p99_e2el_ms": 9900.0}
    if detailed:
        result.update({"input_lens": [256] * num_prompts, "output_lens": output_lens,
                       "ttfts": ttfts if ttfts is not None else [0.1 if n else 0.0 for n in output_lens],
                       "itls": [[0.04] * (n - 1) if n else [] for n in output_lens],
                       "generated_texts": ["x" if n else "" for n in output_lens], "errors": errors})
    return result


TRACEBACK = ("Traceback (most recent call last):\n  ...\n"
             "aiohttp.client_exceptions.ServerDisconnectedError: Server disconnected\n")


@pytest.mark.parametrize(("error", "kind"), [
    ("Too Many Requests", "429"), ("Service Unavailable", "503"),
    ("Never received a valid chunk to calculate TTFT.This response will be marked as failed!", "no_tokens"),
    ("Traceback ...\nasyncio.exceptions.TimeoutError\n", "timeout"), (TRACEBACK, "other"), ("", "other"),
])
def test_error_kind_reads_the_reason_phrase_vllm_stores(error, kind):
    assert bs.error_kind(error) == kind


def test_error_counts_count_failed_requests_by_kind():
    result = bench_json(num_prompts=6, errors=["", "Too Many Requests", "Too Many Requests", "Service Unavailable",
                                               TRACEBACK, ""])
    assert bs.error_counts(result) == {"429": 2, "503": 1, "no_tokens": 0, "timeout": 0, "other": 1}
    assert bs.error_counts(bench_json(detailed=False)) is None


def test_drain_is_the_run_past_the_last_arrival():
    result = bench_json(num_prompts=2400, request_rate=60.0, duration=95.0)
    assert bs.arrival_window_s(result) == pytest.approx(40.0)
    assert bs.drain_after_last_arrival_s(result) == pytest.approx(55.0)
    assert bs.drain_after_last_arrival_s(bench_json(request_rate="inf")) is None


def test_max_ttft_and_slo_attainment_count_only_served_requests():
    result = bench_json(num_prompts=4, errors=["", "Too Many Requests", "", ""], ttfts=[0.2, 0.0, 0.9, 0.1],
                        goodput=2 / 20.0, duration=20.0)
    assert bs.max_ttft_ms(result) == pytest.approx(900.0)
    assert bs.slo_attainment(result) == pytest.approx(0.5)  # 2 good of 4 sent, the refused one missed
    assert bs.slo_attainment(bench_json(goodput=None)) is None


def test_class_summary_hides_the_zero_latencies_of_a_class_that_got_nothing():
    result = bench_json(num_prompts=3, errors=["Too Many Requests"] * 3)
    result.update({"p99_ttft_ms": 0.0, "p50_ttft_ms": 0.0})
    summary = bs.class_summary(result)
    assert summary["completed"] == 0 and summary["failed"] == 3
    assert summary["ttft_p99_ms"] is None and summary["tpot_mean_ms"] is None
    assert summary["failed_by_kind"]["429"] == 3


def test_served_throughput_is_all_classes_tokens_over_the_longest_run():
    low = bench_json(num_prompts=10, duration=50.0)  # 2,560 tokens
    high = bench_json(num_prompts=4, duration=40.0, output_len=64)  # 256 tokens
    saturated = {"output_throughput": 100.0}
    figures = bs.throughput_vs_saturated([low, high], saturated)
    assert figures["window_s"] == 50.0
    assert figures["served_output_tok_s"] == pytest.approx(2816 / 50)
    assert figures["served_vs_saturated"] == pytest.approx(2816 / 50 / 100)


def saturated_run(requests: int, tokens_each: int, seconds_each: float, batch: int) -> dict:
    """`batch` requests at a time, back to back, each delivering its tokens evenly over `seconds_each`."""
    starts = [(i // batch) * seconds_each for i in range(requests)]
    gap = seconds_each / tokens_each
    return {"start_times": starts, "ttfts": [gap] * requests, "output_lens": [tokens_each] * requests,
            "itls": [[gap] * (tokens_each - 1)] * requests}


def test_steady_throughput_leaves_out_the_ramp_and_the_drain_a_whole_run_counts():
    # 100 tokens/s per request, 10 at a time: 1,000 tokens/s whenever the batch is full.
    steady = bs.steady_output_tok_s(saturated_run(requests=40, tokens_each=100, seconds_each=1.0, batch=10))
    assert steady == pytest.approx(1000.0, rel=0.02)
    ragged = saturated_run(requests=41, tokens_each=100, seconds_each=1.0, batch=10)  # one request alone at the end
    assert bs.steady_output_tok_s(ragged) == pytest.approx(1000.0, rel=0.05)  # the whole run's: 4,100 / 5 s


def test_steady_throughput_needs_the_detailed_lists_and_skips_failed_requests():
    assert bs.steady_output_tok_s({"output_throughput": 5.0}) is None
    run = saturated_run(requests=20, tokens_each=50, seconds_each=1.0, batch=10)
    without = {key: values[:3] + values[4:] for key, values in run.items()}
    run["output_lens"][3], run["ttfts"][3] = 0, 0.0  # refused: no tokens
    assert bs.steady_output_tok_s(run) == bs.steady_output_tok_s(without) < 500.0


def test_sweep_point_turns_milliseconds_into_seconds():
    point = bs.sweep_point(16, bench_json(), peak_kv_cache_usage=0.4, preemptions=2)
    assert (point.batch_size, point.ttft_p99_s, point.tpot_p99_s, point.request_latency_p99_s) == (16, 0.24, 0.05, 9.9)
    assert point.output_tokens_per_s == pytest.approx(2560 / 20.0)
    assert (point.peak_kv_cache_usage, point.preemptions) == (0.4, 2)
    assert [bs.prompts_for_batch(b) for b in (1, 4, 8, 256)] == [8, 8, 16, 512]


METRICS = """# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="/tmp/models/{odd} name"} 0.25
vllm:kv_cache_usage_perc_extra{engine="0"} 0.99
vllm:num_preemptions_total{engine="0",model_name="m"} 3.0
vllm:num_preemptions_total{engine="1",model_name="m"} 4.0
vllm:num_preemptions_created{engine="0",model_name="m"} 1.7e9
"""


def test_metric_samples_read_labelled_samples_and_skip_longer_names():
    assert pm.metric_samples(METRICS, "vllm:kv_cache_usage_perc") == [0.25]
    assert pm.kv_cache_usage(METRICS) == 0.25
    assert pm.preemptions_total(METRICS) == 7
    assert pm.kv_cache_usage("vllm:gpu_cache_usage_perc 0.5\n") == 0.5  # the older gauge name
    assert pm.kv_cache_usage("") is None and pm.preemptions_total("") is None


def test_a_scrape_that_is_not_exposition_text_gives_what_came_before_it():
    assert pm.samples_by_name("vllm:num_requests_running 2\n<html>502 Bad Gateway</html>\n") == \
        {"vllm:num_requests_running": [2.0]}
    assert pm.kv_cache_usage("<html>502 Bad Gateway</html>") is None


def test_metrics_url_from_a_base_url_or_itself():
    assert pm.metrics_url("http://h:8000/") == "http://h:8000/metrics"
    assert pm.metrics_url("http://h:8000/metrics") == "http://h:8000/metrics"


def test_gpu_memory_is_the_first_gpu_line():
    assert host.first_gpu_memory_used_mib("74213\n512\n") == 74213.0
    assert host.first_gpu_memory_used_mib("No devices were found\n") is None


def test_peak_sampler_keeps_the_largest_value_read():
    # Endless: with no interval the sampler's thread may read any number of times before the body ends (on a
    # busy 2-core CI machine it once read more than 10,000).
    values = itertools.chain([0.1, None, 0.7, 0.3], itertools.repeat(0.2))
    seen = []

    def read():
        value = next(values)
        seen.append(value)
        return value

    with PeakSampler(read, interval_s=0.0) as sampler:
        pass
    assert sampler.peak == max(v for v in seen if v is not None)


def test_ours_config_is_a_valid_app_config_with_the_benchmark_classes():
    from serve_app.config import parse_config

    config = parse_config(pv.ours_config(Path("/m"), 8000))
    assert [c.name for c in config.priority_classes] == ["high", "low"]
    assert config.policy_classes().get("high").ttft_slo_s == 0.25
    assert config.default_priority == "low" and config.http.port == 8000
    assert config.engine.max_num_seqs == 256


def test_ours_config_coalesces_only_the_low_class_when_asked():
    from serve_app.config import parse_config

    options = pv.OursOptions(low_coalesce_s=0.25)
    coalescing = {c.name: c.stream_coalesce_s for c in parse_config(pv.ours_config(Path("/m"), 8000, options)).priority_classes}
    plain = {c.name: c.stream_coalesce_s for c in parse_config(pv.ours_config(Path("/m"), 8000)).priority_classes}
    assert coalescing == {"high": 0.0, "low": 0.25}
    assert plain == {"high": 0.0, "low": 0.0}


def test_ours_config_sets_the_lower_class_prefill_budget_only_when_asked():
    from serve_app.config import parse_config

    held = parse_config(pv.ours_config(Path("/m"), 8000, pv.OursOptions(lower_class_prefill_tokens=4096)))
    assert held.router.lower_class_prefill_tokens == 4096
    assert parse_config(pv.ours_config(Path("/m"), 8000)).router.lower_class_prefill_tokens is None


def test_ours_config_carries_direct_ingress_and_the_step_size():
    from serve_app.config import parse_config

    config = parse_config(pv.ours_config(Path("/m"), 8000, pv.OursOptions(direct_ingress=True,
                                                                          max_num_batched_tokens=2048)))
    assert config.http.direct_ingress_port == pv.DIRECT_INGRESS_FIRST_PORT
    assert config.engine.max_num_batched_tokens == 2048
    assert parse_config(pv.ours_config(Path("/m"), 8000)).http.direct_ingress_port is None


def test_ours_config_runs_the_haproxy_front_with_delivery_by_pull_when_asked():
    from serve_app.config import parse_config

    http = parse_config(pv.ours_config(Path("/m"), 8000, pv.OursOptions(front="haproxy"))).http
    assert (http.front, http.delivery) == ("haproxy", "pull")
    direct = parse_config(pv.ours_config(Path("/m"), 8000, pv.OursOptions(front="haproxy-direct"))).http
    assert (direct.front, direct.delivery) == ("haproxy", "direct")
    default = parse_config(pv.ours_config(Path("/m"), 8000)).http
    assert (default.front, default.delivery) == ("proxy", "push")


def test_async_scheduling_reaches_our_engine_only_when_chosen():
    from serve_app.config import parse_config
    from serve_app.deployments.replica import engine_args_from_config

    def engine_async(choice: str):
        config = parse_config(pv.ours_config(Path("/m"), 8000, pv.OursOptions(async_scheduling=choice)))
        return engine_args_from_config(config).async_scheduling

    assert engine_async("off") is False
    assert engine_async("on") is True
    assert engine_async("auto") is None  # vLLM decides


def test_gc_freeze_is_on_unless_asked_off():
    from serve_app.config import parse_config

    def frozen(options: pv.OursOptions) -> bool:
        return parse_config(pv.ours_config(Path("/m"), 8000, options)).process.freeze_gc_after_start

    assert frozen(pv.OursOptions()) is True
    assert frozen(pv.OursOptions(freeze_gc=False)) is False
    assert parse_config(pv.ours_config(Path("/m"), 8000)).process.full_gc == "scheduled"
    assert parse_config(pv.ours_config(Path("/m"), 8000, pv.OursOptions(full_gc="python"))).process.full_gc == "python"


def _value(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_mix_commands_carry_each_class_its_own_way_on_each_server():
    classes = pv.load_classes(60, 2)
    ours = pv.mix_commands("ours", classes, "http://127.0.0.1:8000", Path("/m"), Path("/raw"), 40)
    vllm = pv.mix_commands("vllm", classes, "http://127.0.0.1:8001", Path("/m"), Path("/raw"), 40)
    assert json.loads(_value(ours["high"], "--extra-body")) == {"priority": "high"}
    assert _value(ours["high"], "--header") == "x-priority=high"
    assert json.loads(_value(vllm["high"], "--extra-body")) == {"priority": 0}
    assert json.loads(_value(vllm["low"], "--extra-body")) == {"priority": 1}
    assert "--header" not in vllm["low"]
    low, high = ours["low"], ours["high"]
    assert (_value(low, "--num-prompts"), _value(low, "--request-rate"), _value(low, "--random-output-len")) == \
        ("2400", "60", "256")
    assert (_value(high, "--num-prompts"), _value(high, "--request-rate"), _value(high, "--random-output-len")) == \
        ("80", "2", "64")
    # Distinct prompts per class (prefix caching is on) and per-request errors kept.
    assert _value(low, "--seed") != _value(high, "--seed")
    assert "--save-detailed" in high and "--ignore-eos" in high
    assert _value(low, "--result-filename") == "ours_mix_low.json"
    # --goodput and --header take several values: each must be followed by a flag, not a stray word.
    goodput = high.index("--goodput")
    assert high[goodput + 1:goodput + 3] == ["ttft:250", "tpot:100"] and high[goodput + 3].startswith("--")
    assert high[high.index("--header") + 2].startswith("--")


def test_saturated_reference_is_the_low_class_at_rate_inf():
    command = pv.saturated_command("vllm", pv.load_classes(60, 2), "http://x", Path("/m"), Path("/raw"))
    assert (_value(command, "--num-prompts"), _value(command, "--request-rate"), _value(command, "--seed")) == \
        ("512", "inf", "0")
    assert json.loads(_value(command, "--extra-body")) == {"priority": 1}


def run_report(server, high_p99=180.0, ratio=0.95, low_kinds=None, timed_out=False):
    process = {"returncode": 0, "timed_out": timed_out, "started_after_lead_s": 0.0, "wall_s": 60.0}
    low_kinds = low_kinds or {"429": 300, "503": 20, "no_tokens": 0, "timeout": 0, "other": 0}
    return {"server": server, "gpu": "H100", "shape": "llama2-7b", "load": {"duration_s": 40},
            "script": "python benchmarks/priority_vs_vllm.py --only " + server,
            "saturated": {"summary": {"output_tok_s": 7000.0}},
            "mix": {"served_output_tok_s": 7000.0 * ratio, "served_vs_saturated": ratio, "window_s": 60.0,
                    "classes": {
                        "low": {"num_prompts": 2400, "completed": 2080, "failed": sum(low_kinds.values()),
                                "failed_by_kind": low_kinds, "ttft_p50_ms": 900.0, "ttft_p99_ms": 9000.0,
                                "process": process},
                        "high": {"num_prompts": 80, "completed": 80, "failed": 0, "ttft_p50_ms": 60.0,
                                 "ttft_p99_ms": high_p99, "process": process}}}}


def test_goal_checks():
    assert pr.goal_checks(run_report("ours")) == {"high_ttft_p99_ok": True, "high_all_served": True,
                                                  "low_failures_are_refusals": True, "none_hanging": True,
                                                  "throughput_ok": True}
    failing = pr.goal_checks(run_report("vllm", high_p99=900.0, ratio=0.8, timed_out=True,
                                        low_kinds={"429": 0, "503": 0, "no_tokens": 0, "timeout": 2, "other": 0}))
    assert failing["high_all_served"] is True
    assert (failing["high_ttft_p99_ok"], failing["throughput_ok"], failing["none_hanging"],
            failing["low_failures_are_refusals"]) == (False, False, False, False)


def test_merge_puts_servers_side_by_side_and_the_table_shows_each_class():
    report = pr.merge_runs([run_report("ours"), run_report("vllm", high_p99=900.0)])
    assert list(report["servers"]) == ["ours", "vllm"]
    assert report["verdicts"]["vllm"]["high_ttft_p99_ok"] is False
    assert report["ours_mix_vs_vllm_saturated"] == pytest.approx(0.95)
    rows = pr.class_rows(report)
    assert [(r[0], r[1]) for r in rows] == [("ours", "low"), ("ours", "high"), ("vllm", "low"), ("vllm", "high")]
    assert rows[0][2:6] == ("2,080/2,400", "300", "20", "0")
    table = pr.format_table(pr.TABLE_HEADERS, rows)
    assert len(table.splitlines()) == 5 and "2,080/2,400" in table
    assert pr.throughput_rows(report)[0][:4] == ("ours", "7,000", "6,650", "0.950")


def _detailed(starts: list[float], ttfts: list[float], output_lens: list[int], duration: float) -> dict:
    return {"start_times": starts, "ttfts": ttfts, "output_lens": output_lens, "duration": duration}


def test_ttft_by_flood_phase_splits_by_the_floods_arrivals_and_drain():
    # Flood: arrivals from t=100 to t=110, its run ends at 100 + 25 = 125.
    flood = _detailed([100.0, 105.0, 110.0], [1, 1, 1], [8, 8, 8], duration=25.0)
    high = _detailed([90.0, 101.0, 109.0, 110.0, 115.0, 124.0, 130.0, 102.0],
                     [0.05, 1.0, 2.0, 3.0, 0.2, 0.4, 0.06, 9.0], [4, 4, 4, 4, 4, 4, 4, 0], duration=40.0)
    phases = bs.ttft_by_flood_phase(high, flood)
    assert {k: v["count"] for k, v in phases.items()} == {"before": 1, "arriving": 3, "draining": 2, "after": 1}
    # The failed request (no output) at t=102 is left out; percentiles interpolate like numpy's.
    assert phases["arriving"]["ttft_p50_ms"] == pytest.approx(2000)
    assert phases["arriving"]["ttft_p99_ms"] == pytest.approx(1000 * (2.0 + 0.98 * 1.0))
    assert phases["draining"]["ttft_p50_ms"] == pytest.approx(300)
    assert phases["after"]["ttft_p90_ms"] == pytest.approx(60)


def test_ttft_by_flood_phase_needs_detailed_results():
    assert bs.ttft_by_flood_phase({"ttfts": [0.1], "output_lens": [1]}, _detailed([1.0], [1], [1], 1)) is None


def test_phase_rows_list_each_phase_with_empty_ones_dashed():
    empty = {"count": 0, "ttft_p50_ms": None, "ttft_p90_ms": None, "ttft_p99_ms": None}
    report = {"servers": {"ours": {"mix": {"high_ttft_by_low_phase": {
        "before": empty, "arriving": {"count": 16, "ttft_p50_ms": 850.2, "ttft_p90_ms": 1436, "ttft_p99_ms": 1592}}}}}}
    assert pr.phase_rows(report) == [("ours", "before", "0", "-", "-", "-"),
                                     ("ours", "arriving", "16", "850", "1,436", "1,592")]


def test_stats_timeline_aligns_snapshots_with_the_flood_phases():
    flood = _detailed([100.0, 105.0, 110.0], [1, 1, 1], [8, 8, 8], duration=25.0)
    snapshot = {"queue_depth": 40, "running": 200, "replicas": {"r1": {"window": 104}},
                "ingress": {"ttft_recent": {"high": {"n": 3, "p50_s": 0.85, "p99_s": 1.5}},
                            "gc_pauses": {"gen0": {"count": 9, "recent": {"n": 2, "max_s": 0.0004}},
                                          "gen2": {"count": 2, "recent": {"n": 1, "max_s": 0.3125}}}},
                "router_gc_pauses": {"gen2": {"count": 1, "recent": {"n": 0, "max_s": None}}},
                "replica_ttft_recent": {"high": {"n": 3, "p50_s": 0.08, "p99_s": 0.2}, "low": {"n": 1}}}
    rows = bs.stats_timeline([(98.0, {"queue_depth": 0, "replicas": {}}), (104.0, snapshot), (120.0, snapshot),
                              (130.0, snapshot)], flood, "high")
    assert [r["phase"] for r in rows] == ["before", "arriving", "draining", "after"]
    assert [r["t_s"] for r in rows] == [-2.0, 4.0, 20.0, 30.0]
    assert rows[0]["ingress_ttft_p99_ms"] is None and rows[0]["windows"] == []
    assert rows[1] == {"t_s": 4.0, "phase": "arriving", "queue_depth": 40, "running": 200, "windows": [104],
                       "ingress_ttft_p50_ms": 850.0, "ingress_ttft_p99_ms": 1500.0,
                       "replica_ttft_p50_ms": 80.0, "replica_ttft_p99_ms": 200.0,
                       "ingress_gc_max_ms": 312.5, "router_gc_max_ms": None}


def test_stats_timeline_without_the_flood_counts_from_the_first_snapshot():
    rows = bs.stats_timeline([(50.0, {}), (52.5, {})], None, "high")
    assert [(r["t_s"], r["phase"]) for r in rows] == [(0.0, None), (2.5, None)]


def test_timeline_rows_format_snapshots():
    row = {"t_s": 4.0, "phase": "arriving", "queue_depth": 40, "running": 200, "windows": [104],
           "ingress_ttft_p50_ms": 850.0, "ingress_ttft_p99_ms": 1500.0, "replica_ttft_p50_ms": None,
           "replica_ttft_p99_ms": None, "ingress_gc_max_ms": 312.5, "router_gc_max_ms": None}
    assert pr.timeline_rows([row]) == [("4", "arriving", "40", "200", "104", "850 / 1,500", "- / -", "312 / -")]


def test_a_run_without_its_own_saturated_reference_is_measured_against_bare_vllms():
    def mix(high_tokens: int, low_tokens: int) -> dict:
        return {"classes": {
            "high": {"ttft_p99_ms": 200, "completed": 80, "failed": 0, "failed_by_kind": {}, "total_output_tokens":
                     high_tokens, "duration_s": 40.0, "process": {"timed_out": False}},
            "low": {"ttft_p99_ms": 9000, "completed": 10, "failed": 5, "failed_by_kind": {"429": 5},
                    "total_output_tokens": low_tokens, "duration_s": 50.0, "process": {"timed_out": False}}}}

    ours = {"server": "ours", "saturated": {"skipped": "--skip-saturated"}, "mix": mix(5_000, 395_000)}
    vllm = {"server": "vllm", "saturated": {"summary": {"output_tok_s": 10_000.0}},
            "mix": {**mix(5_000, 445_000), "served_output_tok_s": 9_000.0, "served_vs_saturated": 0.9}}
    report = pr.merge_runs([ours, vllm])
    ours_mix = report["servers"]["ours"]["mix"]
    assert ours_mix["served_output_tok_s"] == pytest.approx(400_000 / 50.0)  # over the longest class run
    assert ours_mix["served_vs_saturated"] == pytest.approx(0.8)
    assert report["verdicts"]["ours"]["throughput_ok"] is False
    assert report["servers"]["vllm"]["mix"]["served_vs_saturated"] == 0.9  # its own reference stays
    assert report["ours_mix_vs_vllm_saturated"] == pytest.approx(0.8)
    # Alone, a run without a reference cannot tell.
    assert pr.merge_runs([ours])["verdicts"]["ours"]["throughput_ok"] is None


def test_paired_ttft_differences_compare_request_by_request_and_only_runs_of_the_same_prompts():
    reference = {"input_lens": [100, 200, 300, 400, 500], "output_lens": [10, 10, 10, 10, 10],
                 "ttfts": [0.030, 0.031, 0.032, 0.033, 0.034]}
    # Every request 2 ms later, one of them 40 ms; the fourth failed on our side (no pair).
    ours = {"input_lens": [100, 200, 300, 400, 500], "output_lens": [10, 10, 10, 0, 10],
            "ttfts": [0.032, 0.033, 0.072, 0.0, 0.036]}
    paired = bs.paired_ttft_difference_ms(ours, reference)
    assert paired["pairs"] == 4 and paired["max"] == 40.0
    assert paired["p10"] == 2.0 and paired["p50"] == 2.0
    assert paired["p99"] > 30
    assert bs.paired_ttft_difference_ms({**ours, "input_lens": [1, 2, 3, 4, 5]}, reference) is None  # other prompts
    assert bs.paired_ttft_difference_ms({"completed": 5}, reference) is None  # no per-request detail
