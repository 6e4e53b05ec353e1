"""`benchmarks/session_variation.py`: one server's figures in two sessions, and ours from a third session held
against the later session's `vllm serve` (the issue's latency goals, flagged as cross-session)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench(ttft_p50: float, ttft_p99: float, tpot_p99: float, output_tok_s: float = 5000.0) -> dict:
    return {"completed": 100, "median_ttft_ms": ttft_p50, "p99_ttft_ms": ttft_p99, "median_tpot_ms": tpot_p99 - 1,
            "p99_tpot_ms": tpot_p99, "output_throughput": output_tok_s}


def _session(folder: Path, server: str, points: dict[str, tuple[float, float, float]], tok_s: float,
             bursty: dict[str, tuple[float, float, float]] | None = None) -> Path:
    folder.mkdir()
    latency = {"part": "latency", "scripts": [f"measure latency --only {server}"],
               "saturated": {server: _bench(0, 0, 0, tok_s)},
               "points": {name: {server: _bench(*figures)} for name, figures in points.items()}}
    (folder / "latency.json").write_text(json.dumps(latency))
    if bursty is not None:
        (folder / "bursty.json").write_text(json.dumps({"scripts": ["measure bursty"], "points": {
            name: {server: _bench(*figures)} for name, figures in bursty.items()}}))
    (folder / "servers.json").write_text(json.dumps({server: {"command": f"serve {server}", "gpu": "0"}}))
    return folder


def test_the_later_sessions_vllm_against_the_earlier_and_ours_from_a_third(tmp_path):
    a = _session(tmp_path / "a", "vllm", {"poisson_25": (29.0, 64.0, 5.6), "poisson_75": (44.0, 82.0, 11.7)}, 5400.0,
                 bursty={"bursty_25": (37.0, 88.0, 6.0)})
    b = _session(tmp_path / "b", "vllm", {"poisson_25": (34.5, 72.0, 6.8), "poisson_75": (51.5, 97.0, 12.3)}, 5300.0,
                 bursty={"bursty_25": (47.0, 92.0, 6.4)})
    ours = _session(tmp_path / "ours", "ours", {"poisson_25": (34.0, 66.0, 5.5), "poisson_75": (55.5, 98.0, 12.3)},
                    5300.0)
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "session_variation.py"), "--a", str(a), "--b", str(b),
                    "--ours-from", str(ours), "--out", str(out)],
                   check=True, capture_output=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    variation = json.loads((out / "variation.json").read_text())
    assert variation["points"]["poisson_75"]["median_ttft_ms"]["b_minus_a"] == 7.5
    assert variation["points"]["bursty_25"]["median_ttft_ms"]["b_minus_a"] == 10.0
    assert variation["ttft_p50_b_minus_a_ms_range"] == [5.5, 10.0]
    assert variation["saturated_output_tok_s"]["b_over_a"] == round(5300 / 5400, 4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["same_session"] is False
    goals = {g["name"]: g for g in summary["goals"]}
    assert goals["poisson_75: TTFT p50, ours - vllm serve (ms)"]["measured"] == 4.0  # 55.5 - 51.5: B's vllm
    assert goals["poisson_75: TTFT p50, ours - vllm serve (ms)"]["met"] is True
    assert goals["saturated output tok/s (mixed lengths), ours / vllm serve"]["measured"] == 1.0
    assert "measure latency --only vllm" in summary["commands"] and "serve vllm" in summary["commands"]
    assert not [name for name in goals if name.startswith("bursty")]  # ours had no bursty part
