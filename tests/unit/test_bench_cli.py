"""`llmserve bench`: the parser `register` adds, and each subcommand on small inputs."""
from __future__ import annotations

import argparse
import json

import pytest

from autoscaling.bench import cli, prometheus_metrics

METRICS = """# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
# TYPE vllm:num_preemptions counter
vllm:num_preemptions_total{engine="0",model_name="m"} 4.0
vllm:num_preemptions_created{engine="0",model_name="m"} 1.7e9
# TYPE process_open_fds gauge
process_open_fds 12.0
"""


def llmserve(argv: list[str]) -> int:
    """`llmserve ARGV` with only the bench command registered."""
    parser = argparse.ArgumentParser(prog="llmserve")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_bench_needs_a_subcommand():
    with pytest.raises(SystemExit):
        llmserve(["bench"])


def test_list_prints_every_recipe_with_its_results(capsys):
    assert llmserve(["bench", "list"]) == 0
    out = capsys.readouterr().out
    assert "priority_vs_vllm  [1 GPU]" in out and "results/priority_h100" in out
    assert llmserve(["bench", "list", "--json"]) == 0
    names = [recipe["name"] for recipe in json.loads(capsys.readouterr().out)]
    assert "serving_vs_vllm" in names and "routing_capacity" in names


def test_summarize_reads_a_saved_vllm_bench_result(tmp_path, capsys):
    raw = {"completed": 9, "failed": 1, "duration": 10.0, "num_prompts": 10, "request_rate": "inf",
           "total_output_tokens": 900, "output_throughput": 90.0, "request_goodput": None,
           "p50_ttft_ms": 120.0, "p90_ttft_ms": 200.0, "p99_ttft_ms": 240.0, "mean_tpot_ms": 40.0,
           "output_lens": [100] * 9 + [0], "errors": [""] * 9 + ["Too Many Requests"],
           "ttfts": [0.1] * 9 + [0.0]}
    path = tmp_path / "ours.json"
    path.write_text(json.dumps(raw))
    assert llmserve(["bench", "summarize", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["completed"], summary["ttft_p99_ms"], summary["output_throughput"]) == (9, 240.0, 90.0)
    assert summary["failed_by_kind"]["429"] == 1 and summary["ttft_max_ms"] == pytest.approx(100.0)


def test_summarize_names_a_file_that_is_not_a_result(tmp_path, capsys):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"runs": []}))
    assert llmserve(["bench", "summarize", str(path)]) == 2
    assert "other.json: not a `vllm bench serve` result" in capsys.readouterr().err


def test_metrics_prints_the_watched_figures_summed_over_engines(monkeypatch, capsys):
    asked = []
    monkeypatch.setattr(prometheus_metrics, "fetch_metrics_text", lambda url: asked.append(url) or METRICS)
    assert llmserve(["bench", "metrics", "http://127.0.0.1:8000/"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert asked == ["http://127.0.0.1:8000/metrics"]
    assert figures == {"url": "http://127.0.0.1:8000/metrics", "vllm:num_requests_running": 5.0,
                       "vllm:kv_cache_usage_perc": 0.5, "vllm:num_preemptions_total": 4.0}
    assert llmserve(["bench", "metrics", "http://x/metrics", "--all"]) == 0
    assert json.loads(capsys.readouterr().out)["process_open_fds"] == 12.0


def test_metrics_says_when_the_server_does_not_answer(monkeypatch, capsys):
    monkeypatch.setattr(prometheus_metrics, "fetch_metrics_text", lambda url: None)
    assert llmserve(["bench", "metrics", "http://127.0.0.1:9"]) == 1
    assert "no metrics at http://127.0.0.1:9/metrics" in capsys.readouterr().err


def _recipe_folder(tmp_path):
    benchmarks = tmp_path / "benchmarks"
    benchmarks.mkdir()
    (benchmarks / "index.yaml").write_text(
        "recipes:\n  echo_args:\n    purpose: p\n    goal: g\n    needs: CPU\n    usage: u\n")
    (benchmarks / "echo_args.py").write_text(
        "import os, sys\nprint(os.getcwd(), sys.argv[1:], os.environ['PYTHONPATH'].split(os.pathsep)[0])\n"
        "sys.exit(3)\n")
    return benchmarks


def test_run_starts_the_recipe_from_the_repository_root_with_its_arguments(tmp_path, capfd):
    benchmarks = _recipe_folder(tmp_path)
    assert llmserve(["bench", "--benchmarks-dir", str(benchmarks), "run", "echo_args", "--out", "x", "-v"]) == 3
    # A line of its own: in the full suite, Ray's log forwarding (the shared app's replicas) writes to the same fd.
    assert f"{tmp_path} ['--out', 'x', '-v'] {tmp_path}" in capfd.readouterr().out.splitlines()


def test_run_names_the_known_recipes_when_asked_for_another(tmp_path, capsys):
    benchmarks = _recipe_folder(tmp_path)
    assert llmserve(["bench", "--benchmarks-dir", str(benchmarks), "run", "nope"]) == 2
    assert "no recipe 'nope'; known: echo_args" in capsys.readouterr().err
