"""`request_path_h200.py summarize --latency-only`: a run that measured the latency part alone gets the
latency goals and no flood goals, and a bursty.json left beside it from an earlier run is not read."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _bench(ttft_p50: float, ttft_p99: float, tpot_p99: float, output_tok_s: float = 5000.0) -> dict:
    return {"completed": 100, "failed": 0, "median_ttft_ms": ttft_p50, "p99_ttft_ms": ttft_p99,
            "p99_tpot_ms": tpot_p99, "output_throughput": output_tok_s, "steady_output_throughput": None}


def _summarize(out: Path, *flags: str) -> list[dict]:
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "request_path_h200.py"), "summarize", "--out", str(out),
                    *flags], check=True, capture_output=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    return json.loads((out / "summary.json").read_text())["goals"]


def _script(monkeypatch):
    """benchmarks/request_path_h200.py as a module (benchmarks/ is no package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("request_path_h200", ROOT / "benchmarks" / "request_path_h200.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(ROOT))
    spec.loader.exec_module(script)
    return script


def test_latency_only_summary_has_the_latency_goals_and_no_flood(tmp_path):
    latency = {"part": "latency", "gpu": "test GPU", "capacity_rps": 20.0, "scripts": ["measure latency"],
               "saturated": {"ours": _bench(0, 0, 0, 4900.0), "vllm": _bench(0, 0, 0, 5000.0)},
               "points": {"poisson_25": {"ours": _bench(34.0, 66.0, 5.5), "vllm": _bench(29.0, 64.0, 5.6)},
                          "poisson_75": {"ours": _bench(56.0, 98.0, 12.3), "vllm": _bench(44.0, 82.0, 11.7)}}}
    (tmp_path / "latency.json").write_text(json.dumps(latency))
    (tmp_path / "servers.json").write_text(json.dumps({"ours": {"command": "ours", "gpu": "0"},
                                                       "vllm": {"command": "vllm", "gpu": "0"}}))
    (tmp_path / "bursty.json").write_text("not read")
    goals = {g["name"]: g for g in _summarize(tmp_path, "--latency-only")}
    assert goals["poisson_25: TTFT p50, ours - vllm serve (ms)"]["met"] is True
    assert goals["poisson_75: TTFT p50, ours - vllm serve (ms)"]["measured"] == 12.0
    assert goals["poisson_75: TTFT p50, ours - vllm serve (ms)"]["met"] is False
    assert goals["saturated output tok/s (mixed lengths), ours / vllm serve"]["measured"] == 0.98
    assert not [name for name in goals if name.startswith("flood")]
    assert json.loads((tmp_path / "summary.json").read_text())["parts"] == ["latency"]


def test_a_flood_timeline_point_holds_each_replicas_queue_step_loop_lag_and_gc_pauses(monkeypatch):
    script = _script(monkeypatch)
    load = {"num_running": 230, "num_waiting": 3, "loop_lag_max_s": 0.004,
            "inter_token_recent": {"tokens": 900, "mean_s": 0.025, "max_s": 0.151},
            "gc_pauses": {"gen0": {"count": 5, "max_s": 0.002, "recent": {"n": 2, "max_s": 0.001}},
                          "gen2": {"count": 1, "max_s": 0.2, "recent": None}}}
    monkeypatch.setattr(script, "replica_loads", lambda base_url: {"r1": load, "r2": None})
    moment = script.replica_moment("http://server")
    assert moment["t"] > 1e9
    assert moment["r1"] == {"running": 230, "waiting": 3, "inter_token_max_s": 0.151, "loop_lag_max_s": 0.004,
                            "gc_recent_max_s": {"gen0": 0.001, "gen2": None}}
    assert moment["r2"]["running"] is None  # a replica that has not reported yet
    monkeypatch.setattr(script, "replica_loads", lambda base_url: None)
    assert script.replica_moment("http://server") is None  # no answer: no point


def test_every_measured_part_waits_until_its_server_answers_health(monkeypatch, tmp_path):
    """A part measured at once after `start` (ours' bursty part did, 2026-12-03) must not bench a server that
    is still starting: every request of that point failed with connection refused."""
    import os
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    script = _script(monkeypatch)
    health_answers = []

    class StartingServer(BaseHTTPRequestHandler):
        def do_GET(self):
            ready = len(health_answers) >= 1  # the first probe finds it still starting
            health_answers.append(200 if ready else 503)
            self.send_response(health_answers[-1])
            self.end_headers()

        def log_message(self, *args):
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), StartingServer)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    (tmp_path / "servers.json").write_text(json.dumps({"ours": {"pid": os.getpid(), "started": 0.0}}))
    (tmp_path / "ours_server.log").write_text("")
    seen_by_part = []
    monkeypatch.setitem(script.PARTS, "bursty", lambda args: seen_by_part.append(list(health_answers)))
    monkeypatch.setattr(script, "stop_servers", lambda args: None)
    monkeypatch.setattr(sys, "argv", ["request_path_h200.py", "measure", "--out", str(tmp_path), "--part", "bursty",
                                      "--only", "ours", "--ports", str(http.server_address[1]), "1"])
    try:
        assert script.main() == 0
    finally:
        http.shutdown()
    assert seen_by_part == [[503, 200]]
    assert "healthy_after_s" in json.loads((tmp_path / "servers.json").read_text())["ours"]


def test_the_floods_own_router_counts_leave_out_the_reference_run_before_it(monkeypatch):
    script = _script(monkeypatch)
    before = {"classes": {"low": {"admitted": 800, "refused_overload": 10, "served": 790, "queued": 0,
                                  "refused_wait_max_s": 14.9, "queue_wait_p50_s": 0.4}}}
    after = {"classes": {"low": {"admitted": 3500, "refused_overload": 797, "served": 2867, "queued": 3,
                                 "refused_wait_max_s": 14.98, "queue_wait_p50_s": 0.5},
                         "high": {"admitted": 80, "served": 80, "running": 0}}}
    assert script.counts_between(before, after) == {"low": {"admitted": 2700, "refused_overload": 787, "served": 2077},
                                                     "high": {"admitted": 80, "served": 80}}
    assert script.counts_between(None, after) == {}


def test_adopt_takes_ours_measured_points_from_a_second_machine_and_the_summary_names_it(tmp_path):
    """The first machine lost mid-sequence: ours' points measured on a fresh one are adopted, that run's short
    saturated bench and its copy of vLLM's figures are not, and the summary says where the points came from."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    vllm_25 = _bench(31.0, 61.0, 5.4)
    (first / "latency.json").write_text(json.dumps({
        "part": "latency", "gpu": "GPU A", "capacity_rps": 20.0, "scripts": ["measure on A"],
        "saturated": {"ours": _bench(0, 0, 0, 4860.0), "vllm": _bench(0, 0, 0, 5000.0)},
        "points": {"poisson_25": {"vllm": vllm_25}, "poisson_75": {"vllm": _bench(55.0, 99.0, 12.0)}}}))
    (first / "servers.json").write_text(json.dumps({"vllm": {"command": "vllm", "gpu": "0"}}))
    (second / "latency.json").write_text(json.dumps({
        "part": "latency", "gpu": "GPU B", "capacity_rps": 20.0, "scripts": ["measure on A", "measure on B"],
        "saturated": {"ours": _bench(0, 0, 0, 3900.0), "vllm": _bench(0, 0, 0, 5000.0)},
        "points": {"poisson_25": {"vllm": _bench(1.0, 1.0, 1.0), "ours": _bench(37.0, 81.0, 5.8),
                                  "ours_first_part_path": {"total": {"n": 3}}},
                   "poisson_75": {"vllm": _bench(55.0, 99.0, 12.0), "ours": None}}}))
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "request_path_h200.py"), "adopt", "--out", str(first),
                    "--from", str(second)], check=True, capture_output=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    adopted = json.loads((first / "latency.json").read_text())
    assert adopted["points"]["poisson_25"]["vllm"] == vllm_25
    assert adopted["points"]["poisson_25"]["ours_first_part_path"] == {"total": {"n": 3}}
    assert adopted["saturated"]["ours"]["output_throughput"] == 4860.0
    assert "ours" not in adopted["points"]["poisson_75"]
    goals = {g["name"]: g for g in _summarize(first, "--latency-only")}
    assert goals["poisson_25: TTFT p50, ours - vllm serve (ms)"]["measured"] == 6.0
    assert goals["poisson_75: both benches completed"]["met"] is False
    summary = json.loads((first / "summary.json").read_text())
    assert summary["ours_points_from"]["gpu"] == "GPU B" and summary["ours_points_from"]["points"] == ["poisson_25"]
    assert summary["commands"][-1] == "measure on B"


def test_flood_from_files_rebuilds_a_lost_runs_flood_entry_and_lists_the_classes_it_lacks(tmp_path):
    """The machine lost while vLLM's flood drained: its high class and saturated reference had saved their
    files, its low class had not. The entry is rebuilt from those files at the rate the run flooded at, the
    low class listed as missing (not as hung), and ours' flood entry beside it is left as it was."""
    high = {"num_prompts": 80, "completed": 80, "failed": 0, "duration": 40.2, "p50_ttft_ms": 140.0,
            "p90_ttft_ms": 500.0, "p99_ttft_ms": 900.0, "mean_tpot_ms": 29.0, "output_throughput": 122.0,
            "total_output_tokens": 5120, "ttfts": [0.1] * 80, "errors": [""] * 80}
    saturated = {"completed": 800, "failed": 0, "duration": 23.0, "request_throughput": 34.8,
                 "output_throughput": 8900.0}
    (tmp_path / "vllm_flood_high.json").write_text(json.dumps(high))
    (tmp_path / "vllm_flood_saturated.json").write_text(json.dumps(saturated))
    ours_entry = {"high": {"ttft_p99_ms": 120.0}, "low": {"failed": 0}, "hung": []}
    (tmp_path / "bursty.json").write_text(json.dumps({"part": "bursty", "gpu": "GPU B", "points": {},
                                                      "scripts": ["measure ours"],
                                                      "flood": {"low_rate_rps": 68.1, "ours": ours_entry}}))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "request_path_h200.py"), "flood-from-files",
                           "--out", str(tmp_path), "--only", "vllm", "--flood-low-rate", "70.4432"],
                          capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    flood = json.loads((tmp_path / "bursty.json").read_text())["flood"]
    assert flood["vllm"]["high"]["ttft_p99_ms"] == 900.0 and flood["vllm"]["high"]["completed"] == 80
    assert "--request-rate 2 " in flood["vllm"]["high"]["command"]
    assert flood["vllm"]["missing"] == ["low"] and flood["vllm"]["hung"] == []
    assert "served_vs_saturated" not in flood["vllm"]  # a class lacking: nothing to weigh against saturated
    assert flood["vllm"]["saturated"]["request_throughput"] == 34.8
    assert flood["vllm_low_rate_rps"] == 70.4432 and flood["low_rate_rps"] == 68.1
    assert flood["ours"] == ours_entry
    assert flood["classes"]["high"]["ttft_slo_s"] == 0.25


def test_the_saturated_run_names_a_class_that_holds_the_burst_for_ours_and_nothing_for_vllm(monkeypatch, tmp_path):
    """Both servers must serve the same burst for the throughput goal to compare serving: ours' saturated run
    names a class whose queue deadline outlasts the burst's drain, vLLM's sends no class."""
    import argparse
    script = _script(monkeypatch)
    args = argparse.Namespace(model_dir=tmp_path, out=tmp_path, input_len=512, output_len=256)
    ours = script.mixed_bench("ours", args, "saturated", num_prompts=800, rate="inf", ours_class="bulk")
    vllm = script.mixed_bench("vllm", args, "saturated", num_prompts=800, rate="inf", ours_class="bulk")
    assert ours[ours.index("--header") + 1] == "x-priority=bulk"
    assert "--header" not in vllm
    assert "--header" not in script.mixed_bench("ours", args, "poisson_25", num_prompts=100, rate="5")
    from serve_app.config import load_config
    config_path = Path(script.server_commands(tmp_path, tmp_path)["ours"][-1])
    assert "bulk" in [klass.name for klass in load_config(config_path).priority_classes]  # a valid config
    config = yaml.safe_load(config_path.read_text())
    bulk = next(c for c in config["priority_classes"] if c["name"] == "bulk")
    drain_s = script.SATURATED_PROMPTS / 21.4  # vLLM's capacity on an H200, requests/s
    assert bulk["queue_deadline_s"] > 2 * drain_s
    assert config["default_priority"] == "standard"


def test_a_points_engine_ttft_waits_for_rays_export_then_reads_vllms_own_histogram(monkeypatch):
    """Ours' replicas reach Ray's metrics port every few seconds: the reading after a point is taken again until it
    counts the point's requests; the figures are the histogram's over the point alone."""
    script = _script(monkeypatch)
    before = {0.04: 10.0, 0.06: 10.0, 0.08: 10.0, 0.1: 10.0, float("inf"): 10.0}
    exported = [dict(before), {0.04: 50.0, 0.06: 130.0, 0.08: 170.0, 0.1: 190.0, float("inf"): 210.0}]
    slept = []
    figures = script.engine_ttft_over("ours", before, expected=200, reading=lambda server: exported.pop(0),
                                      sleep=slept.append)
    assert slept == [2] and figures["count"] == 200 and figures["expected"] == 200
    assert figures["p50_ms"] == 55.0  # rank 100 of 200: 60 of the 80 in (40, 60] ms
    assert figures["share_above_ms"] == {"40": 0.8, "60": 0.4, "80": 0.2, "100": 0.1}
    assert script.engine_ttft_over("vllm", before, expected=5, wait_s=0, reading=lambda server: before) is None


def test_ours_run_exports_its_replicas_vllm_histograms_on_the_port_the_benchmark_reads(tmp_path, monkeypatch):
    from serve_app.config import load_config
    script = _script(monkeypatch)
    config = load_config(Path(script.server_commands(tmp_path, tmp_path)["ours"][-1]))
    assert config.telemetry.metrics_export_port == script.OURS_METRICS_PORT
    assert config.telemetry.metrics and config.telemetry.engine_metrics


def test_the_reading_before_a_point_waits_until_it_counts_what_ours_has_served(monkeypatch):
    """A saturated burst just before the first point: its last requests reach Ray's metrics port seconds later,
    and must land in the reading before the point, not in the point's."""
    script = _script(monkeypatch)
    readings = [{float("inf"): 700.0}, {float("inf"): 790.0}, {float("inf"): 800.0}]
    slept = []
    settled = script.engine_ttft_settled("ours", reading=lambda server: readings.pop(0), served=lambda server: 800,
                                         sleep=slept.append)
    assert settled == {float("inf"): 800.0} and slept == [2, 2]
    assert script.served_so_far("vllm") == 0


def test_a_bursty_part_without_its_flood_adds_its_point_goals_and_no_flood_goals(tmp_path):
    latency = {"part": "latency", "gpu": "test GPU", "capacity_rps": 20.0, "scripts": ["measure latency"],
               "saturated": {"ours": _bench(0, 0, 0, 4900.0), "vllm": _bench(0, 0, 0, 5000.0)},
               "points": {"poisson_25": {"ours": _bench(34.0, 66.0, 5.5), "vllm": _bench(29.0, 64.0, 5.6)}}}
    bursty = {"part": "bursty", "scripts": ["measure bursty --skip-flood"],
              "points": {"bursty_50": {"ours": _bench(50.0, 90.0, 9.0), "vllm": _bench(47.0, 93.0, 8.9)}}}
    (tmp_path / "latency.json").write_text(json.dumps(latency))
    (tmp_path / "bursty.json").write_text(json.dumps(bursty))
    (tmp_path / "servers.json").write_text(json.dumps({"ours": {"command": "ours", "gpu": "0"},
                                                       "vllm": {"command": "vllm", "gpu": "0"}}))
    goals = {g["name"]: g for g in _summarize(tmp_path)}
    assert goals["bursty_50: TTFT p50, ours - vllm serve (ms)"]["measured"] == 3.0
    assert "poisson_25: TTFT p99, ours / vllm serve" in goals
    assert not [name for name in goals if name.startswith("flood")]
