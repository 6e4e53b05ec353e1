"""Servers under test started in the background: start, wait for health, stop the whole process
group, make sure the GPU is free for the next one; and servers left running by an earlier call."""
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

from autoscaling.bench.host import log, read_gpu_memory_used_mib


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


def wait_healthy(url: str, process: subprocess.Popen | DetachedServer, timeout_s: float, log_path: Path) -> float:
    """Seconds until `url` answered 200; raises with the server log's tail if it exits or times out."""
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


class DetachedServer:
    """A server started by an earlier process (a recipe's `start` phase): enough of Popen for
    `wait_healthy`, so engine start and measuring can each fit one device call."""

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    def poll(self) -> int | None:
        try:
            os.kill(self.pid, 0)
            return None
        except ProcessLookupError:
            self.returncode = -1
            return self.returncode


def stop_detached(pid: int) -> None:
    """Ctrl-C to the server, then TERM and KILL to its process group, each after a grace period."""
    for sig, grace in ((signal.SIGINT, 60), (signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig) if sig != signal.SIGINT else os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if DetachedServer(pid).poll() is not None:
                return
            time.sleep(1)


def wait_for_detached(state_path: Path, health_url: str, timeout_s: float, log_path: Path, name: str) -> dict:
    """The state a recipe's `start` phase wrote for a detached server (`pid`, `started`), once the server is
    healthy; the first wait records `healthy_after_s` in it, so a later measure call does not wait again."""
    state = json.loads(state_path.read_text())
    if "healthy_after_s" not in state:
        wait_healthy(health_url, DetachedServer(state["pid"]), timeout_s, log_path)
        state["healthy_after_s"] = round(time.time() - state["started"], 1)
        state_path.write_text(json.dumps(state, indent=2))
    log(f"{name}: healthy {state['healthy_after_s']:.0f}s after its start")
    return state
