"""benchmarks/request_path_one_gpu.sh's resume (RESUME_FROM): the parts a lost machine finished are not run
again and their files are taken; the rest run in order. PARTS picks the parts both servers run, ORDER which server goes first. Run with a stand-in `python3` and `nvidia-smi` on the
PATH that log each call, since the real ones need the GPU host."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "request_path_one_gpu.sh"


def _sequence(tmp_path: Path, resume_progress: str | None, **extra_env: str) -> tuple[list[str], str, Path]:
    """The request_path_h200.py phases the sequence ran, its progress file, and its output folder."""
    bin_dir, out, calls, repo = tmp_path / "bin", tmp_path / "out", tmp_path / "calls.txt", tmp_path / "repo"
    for folder in (bin_dir, out, repo / "benchmarks"):
        folder.mkdir(parents=True)
    (bin_dir / "python3").write_text(f'#!/bin/bash\necho "$*" >> {calls}\n')
    (bin_dir / "nvidia-smi").write_text("#!/bin/bash\necho 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    # A checkout of its own: the real compile-cache script restores into / and saves this machine's caches.
    (repo / "benchmarks" / "gpu_compile_cache.sh").write_text(f'echo "compile cache $*" >> {calls}\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FRONT": "haproxy-direct", **extra_env}
    if resume_progress is not None:
        resume = tmp_path / "resume"
        resume.mkdir()
        (resume / "progress").write_text(resume_progress)
        (resume / "latency.json").write_text(json.dumps({"part": "latency", "capacity_rps": 21.4}))
        (resume / "vllm_poisson_25.json").write_text("{}")
        (resume / "servers.json").write_text(json.dumps({"vllm": {"pid": 689}}))
        env["RESUME_FROM"] = str(resume)
    subprocess.run(["bash", str(SCRIPT), str(out)], cwd=repo, env=env, check=True, capture_output=True, timeout=60)
    phases = [" ".join(line.replace(f" --out {out}", "").split()[1:4]) for line in calls.read_text().splitlines()
              if line.startswith("benchmarks/request_path_h200.py")]
    return phases, (out / "progress").read_text(), out


def test_a_fresh_run_measures_both_servers_in_order(tmp_path):
    phases, progress, _ = _sequence(tmp_path, None)
    assert phases == ["start --only vllm", "measure --part latency", "measure --part bursty", "stop --only vllm",
                      "start --only ours", "measure --part latency", "measure --part bursty", "stop --only ours",
                      "summarize"]
    assert progress.rstrip().endswith("done")


def test_a_resumed_run_skips_what_the_lost_machine_finished_and_takes_its_files(tmp_path):
    lost = "09:33:40 begin\n09:34:00 vllm start rc=0\n09:39:07 vllm latency rc=0\n09:44:00 vllm bursty+flood rc=0\n"
    phases, progress, out = _sequence(tmp_path, lost)
    assert phases == ["start --only ours", "measure --part latency", "measure --part bursty", "stop --only ours",
                      "summarize"]
    assert "resumed from" in progress and "vllm latency" not in progress
    assert (out / "latency.json").exists() and (out / "vllm_poisson_25.json").exists()
    assert not (out / "servers.json").exists()  # the lost machine's pids mean nothing here
    assert (out / "resumed_from.progress").read_text() == lost


def test_a_part_the_lost_machine_left_unfinished_runs_again(tmp_path):
    lost = "09:33:40 begin\n09:34:00 vllm start rc=0\n09:39:07 vllm latency rc=0\n"  # lost during vLLM's flood
    phases, progress, _ = _sequence(tmp_path, lost)
    assert phases[:3] == ["start --only vllm", "measure --part bursty", "stop --only vllm"]
    assert "vllm latency skipped" in progress
    assert phases[3:7] == ["start --only ours", "measure --part latency", "measure --part bursty", "stop --only ours"]


def test_parts_latency_measures_only_the_latency_part_and_summarizes_only_its_goals(tmp_path):
    phases, progress, _ = _sequence(tmp_path, None, PARTS="latency")
    assert phases == ["start --only vllm", "measure --part latency", "stop --only vllm",
                      "start --only ours", "measure --part latency", "stop --only ours", "summarize --latency-only"]
    assert "vllm bursty+flood not asked for" in progress and "skipped" not in progress


def test_parts_bursty_resumed_after_a_latency_run_starts_each_server_for_the_bursty_part_alone(tmp_path):
    latency_run = "12:55:04 vllm start rc=0\n13:00:12 vllm latency rc=0\n13:05:21 ours latency rc=0\n"
    phases, _, out = _sequence(tmp_path, latency_run, PARTS="bursty")
    assert phases == ["start --only vllm", "measure --part bursty", "stop --only vllm",
                      "start --only ours", "measure --part bursty", "stop --only ours", "summarize"]
    assert (out / "latency.json").exists()  # the bursty part's load points


def test_flood_0_runs_the_bursty_part_without_its_flood(tmp_path):
    latency_run = "12:55:04 vllm start rc=0\n13:00:12 vllm latency rc=0\n13:05:21 ours latency rc=0\n"
    _, _, out = _sequence(tmp_path, latency_run, PARTS="bursty", FLOOD="0")
    measures = [line for line in (tmp_path / "calls.txt").read_text().splitlines() if " measure " in line]
    assert len(measures) == 2 and all("--point-s 20 --skip-flood --out" in line for line in measures)


def test_order_ours_first_runs_ours_bursty_points_before_vllms_with_the_asked_point_length(tmp_path):
    latency_run = "12:55:04 vllm start rc=0\n13:00:12 vllm latency rc=0\n13:05:21 ours latency rc=0\n"
    phases, progress, _ = _sequence(tmp_path, latency_run, PARTS="bursty", FLOOD="0", ORDER="ours vllm",
                                    BURSTY_POINT_S="60")
    assert phases == ["start --only ours", "measure --part bursty", "stop --only ours",
                      "start --only vllm", "measure --part bursty", "stop --only vllm", "summarize"]
    assert progress.index("ours (haproxy-direct) start") < progress.index("vllm start")
    measures = [line for line in (tmp_path / "calls.txt").read_text().splitlines() if " measure " in line]
    assert all("--point-s 60 --skip-flood" in line for line in measures)


def test_order_ours_first_refuses_a_run_whose_load_points_vllm_has_not_measured(tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as refused:
        _sequence(tmp_path, None, ORDER="ours vllm")
    assert refused.value.returncode == 2
    progress = (tmp_path / "out" / "progress").read_text()
    assert "needs vLLM's latency part done first" in progress
    assert not (tmp_path / "calls.txt").exists() or " start " not in (tmp_path / "calls.txt").read_text()
