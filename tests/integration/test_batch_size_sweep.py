"""The batch-size sweep benchmark runs for real on the CPU engine with the tiny model."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from serve_app.memory.batch_profile import BatchProfile

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_sweep_writes_profile_and_plots(tmp_path):
    out = tmp_path / "sweep"
    command = [sys.executable, str(ROOT / "benchmarks" / "batch_size_sweep.py"), "--model-dir", str(tmp_path / "tiny"),
               "--shape", "tiny", "--out", str(out), "--batch-sizes", "1,4", "--input-len", "16",
               "--output-len", "8", "--max-model-len", "256", "--tpot-slo", "5"]
    done = subprocess.run(command, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    profile = BatchProfile.from_json((out / "batch_sweep_profile.json").read_text())
    assert [p.batch_size for p in profile.points] == [1, 4]
    assert all(p.output_tokens_per_s > 0 and p.ttft_p99_s > 0 for p in profile.points)
    # Four sequences decode in one step as cheaply as one on this tiny model: more tokens per second.
    assert profile.points[1].output_tokens_per_s > profile.points[0].output_tokens_per_s
    for name in ("batch_sweep_throughput.png", "batch_sweep_latency.png"):
        assert (out / name).stat().st_size > 10_000
