"""vLLM engine processes (`VLLM::EngineCore`, `VLLM::Worker`) that outlive the local Ray session that started them.

A replica's engine runs in child processes of its Ray worker. Ray stops workers by killing them, so
an engine whose replica did not shut it down (a second Ctrl-C, a force-killed replica) keeps running,
re-parented, holding memory, /dev/shm segments and on a GPU the device; `ray stop` does not match
vLLM's process titles. Engines inherit their worker's environment, whose `RAY_RAYLET_PID` names the
session; the raylet's start time rules out a recycled pid, so another service's engines are never ours.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

PROC = Path("/proc")
ENGINE_TITLE_PREFIX = b"VLLM::"
SESSION_ENV = "RAY_RAYLET_PID"


@dataclass(frozen=True)
class RaySession:
    """A local Ray session, named by its raylet: pid and start time (clock ticks after boot)."""

    raylet_pid: int
    raylet_start_ticks: int


def _stat_fields(pid: int, proc_dir: Path) -> list[str] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces): [state, ppid, ...]."""
    try:
        text = (proc_dir / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def start_ticks(pid: int, proc_dir: Path = PROC) -> int | None:
    fields = _stat_fields(pid, proc_dir)
    return int(fields[19]) if fields and len(fields) > 19 else None  # stat field 22, starttime


def is_running(pid: int, proc_dir: Path = PROC) -> bool:
    fields = _stat_fields(pid, proc_dir)
    return bool(fields) and fields[0] not in ("Z", "X")  # a zombie holds no memory, only its pid


def raylet_of(parent_pid: int, proc_dir: Path = PROC) -> RaySession | None:
    """The session of the raylet that process `parent_pid` started (`ray.init` starts one as its child)."""
    for pid_dir in proc_dir.glob("[0-9]*"):
        try:
            if (pid_dir / "comm").read_text().strip() != "raylet":
                continue
        except OSError:
            continue
        fields = _stat_fields(int(pid_dir.name), proc_dir)
        if fields and int(fields[1]) == parent_pid:
            return RaySession(int(pid_dir.name), int(fields[19]))
    return None


def session_engine_pids(session: RaySession, proc_dir: Path = PROC) -> list[int]:
    """Live vLLM engine processes started under `session`."""
    wanted = f"{SESSION_ENV}={session.raylet_pid}".encode()
    pids = []
    for pid_dir in proc_dir.glob("[0-9]*"):
        pid = int(pid_dir.name)
        try:
            if not (pid_dir / "cmdline").read_bytes().startswith(ENGINE_TITLE_PREFIX):
                continue
            if wanted not in (pid_dir / "environ").read_bytes().split(b"\0"):
                continue
        except OSError:  # ended while we looked, or not ours to read
            continue
        started = start_ticks(pid, proc_dir)
        if started is not None and started >= session.raylet_start_ticks and is_running(pid, proc_dir):
            pids.append(pid)
    return sorted(pids)


def end_processes(pids: list[int], grace_s: float, *, send: Callable[[int, int], None] = os.kill,
                  running: Callable[[int], bool] = is_running, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> list[int]:
    """SIGTERM (vLLM then shuts down and releases its shared memory), SIGKILL whatever still runs
    after `grace_s`; returns the pids that had to be killed."""
    for pid in pids:
        _signal(send, pid, signal.SIGTERM)
    deadline = clock() + grace_s
    left = [pid for pid in pids if running(pid)]
    while left and clock() < deadline:
        sleep(0.2)
        left = [pid for pid in left if running(pid)]
    for pid in left:
        _signal(send, pid, signal.SIGKILL)
    return left


def _signal(send: Callable[[int, int], None], pid: int, sig: int) -> None:
    try:
        send(pid, sig)
    except ProcessLookupError:  # ended meanwhile
        pass
