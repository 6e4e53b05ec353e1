"""vLLM engine processes (`VLLM::EngineCore`, `VLLM::Worker`) that outlive the local Ray session that started them.

A replica's engine runs in child processes of its Ray worker. Ray stops workers by killing them, so
an engine whose replica did not shut it down (a second Ctrl-C, a force-killed replica) keeps running,
re-parented, holding memory, /dev/shm segments and on a GPU the device; `ray stop` does not match
vLLM's process titles. Engines inherit their worker's environment, whose `RAY_RAYLET_PID` names the
session; the raylet's start time rules out a recycled pid, so another service's engines are never ours.
vLLM's process title overwrites the environment /proc shows, so an engine forked from the replica's fork
server (`serve_app.engine_forkserver`) records itself under its session at start (ENGINE_RECORDS).
"""
from __future__ import annotations

import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

PROC = Path("/proc")
ENGINE_TITLE_PREFIX = b"VLLM::"
SESSION_ENV = "RAY_RAYLET_PID"
ENGINE_RECORDS = Path(tempfile.gettempdir()) / "llmserve-engines"


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


def cpu_seconds(pid: int, proc_dir: Path = PROC, ticks_per_s: int | None = None) -> float | None:
    """User + system CPU seconds process `pid` has used (stat fields 14 and 15); None when it is gone."""
    fields = _stat_fields(pid, proc_dir)
    if not fields or len(fields) <= 12:
        return None
    return (int(fields[11]) + int(fields[12])) / (ticks_per_s or os.sysconf("SC_CLK_TCK"))


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


def _records_of(session: RaySession, records_dir: Path) -> Path:
    return records_dir / f"{session.raylet_pid}-{session.raylet_start_ticks}"


def record_engine_process(pid: int, environ: dict[str, str], proc_dir: Path = PROC,
                          records_dir: Path = ENGINE_RECORDS) -> Path | None:
    """An engine process notes itself under its Ray session (from its environment's raylet pid): vLLM's
    process title overwrites /proc/<pid>/environ, so the session cannot be read from there afterwards."""
    raylet = environ.get(SESSION_ENV, "")
    if not raylet.isdigit():
        return None
    raylet_ticks, own_ticks = start_ticks(int(raylet), proc_dir), start_ticks(pid, proc_dir)
    if raylet_ticks is None or own_ticks is None:
        return None
    record = _records_of(RaySession(int(raylet), raylet_ticks), records_dir) / str(pid)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(str(own_ticks))
    return record


def _recorded_pids(session: RaySession, proc_dir: Path, records_dir: Path) -> set[int]:
    pids = set()
    for record in _records_of(session, records_dir).glob("[0-9]*"):
        pid = int(record.name)
        try:
            recorded_ticks = int(record.read_text())
        except (OSError, ValueError):
            continue
        if start_ticks(pid, proc_dir) == recorded_ticks:  # not a later process that got the same pid
            pids.add(pid)
    return pids


def session_engine_pids(session: RaySession, proc_dir: Path = PROC, records_dir: Path = ENGINE_RECORDS) -> list[int]:
    """Live vLLM engine processes started under `session`: those that recorded themselves
    (`record_engine_process`) and those whose environment still names the session."""
    wanted = f"{SESSION_ENV}={session.raylet_pid}".encode()
    recorded = _recorded_pids(session, proc_dir, records_dir)
    pids = []
    for pid_dir in proc_dir.glob("[0-9]*"):
        pid = int(pid_dir.name)
        try:
            if not (pid_dir / "cmdline").read_bytes().startswith(ENGINE_TITLE_PREFIX):
                continue
            if pid not in recorded and wanted not in (pid_dir / "environ").read_bytes().split(b"\0"):
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
