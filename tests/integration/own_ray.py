"""An app in its own local Ray, in a subprocess (`llmserve run`): for settings Ray must start with
(direct ingress, HAProxy mode), beside the suite's shared app."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

START_TIMEOUT_S = 600
STOP_TIMEOUT_S = 120


@dataclass
class OwnRayApp:
    process: subprocess.Popen
    lines: list[str]  # its output so far


@contextmanager
def own_ray_app(config: dict, workdir: Path) -> Iterator[OwnRayApp]:
    """Runs `llmserve run` on `config` until it says it is serving; stops it at the end (a test may have
    stopped it already)."""
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own Ray, not the suite's
    process = subprocess.Popen([sys.executable, "-m", "serve_app.cli", "run", "--config", str(config_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)
    lines: list[str] = []
    serving = threading.Event()

    def read_output() -> None:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("llmserve: serving"):
                serving.set()

    threading.Thread(target=read_output, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not serving.wait(1.0):
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            time.sleep(1.0)  # the rest of its output
            pytest.fail(f"app did not start (exit {process.poll()}):\n" + "".join(lines[-60:]))
    try:
        yield OwnRayApp(process, lines)
    finally:
        if process.poll() is None:
            # SIGTERM first: `llmserve run` then stops its Ray, and Ray what it started (HAProxy included).
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
