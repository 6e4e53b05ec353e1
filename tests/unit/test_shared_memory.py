"""Leftover vLLM shared-memory segments: only new, unused ones are removed."""
from __future__ import annotations

import time
from pathlib import Path

from serve_app.shared_memory import mapped_segments, remove_orphaned_segments, vllm_segments


def test_removes_only_segments_created_since_start_and_not_in_use(tmp_path: Path):
    older = tmp_path / "psm_older"
    in_use = tmp_path / "psm_in_use"
    orphan = tmp_path / "psm_orphan"
    unrelated = tmp_path / "sem.mp-123"
    for path in (older, in_use, orphan, unrelated):
        path.write_bytes(b"x")
    before = {older}
    removed = remove_orphaned_segments(before, shm_dir=tmp_path, in_use={in_use})
    assert removed == [orphan]
    assert vllm_segments(tmp_path) == {older, in_use}
    assert unrelated.exists()


def test_a_segment_this_process_maps_counts_as_in_use():
    from multiprocessing import shared_memory

    segment = shared_memory.SharedMemory(create=True, size=4096)
    try:
        assert Path("/dev/shm") / segment.name in mapped_segments()
    finally:
        segment.close()
        segment.unlink()


# Leftover engine processes, on a fake /proc: only this session's, only vLLM's.

from serve_app.engine_processes import (  # noqa: E402
    RaySession, end_processes, raylet_of, record_engine_process, session_engine_pids)

RAYLET_PID, RAYLET_START = 500, 1_000


def fake_process(proc: Path, pid: int, title: bytes, *, env: dict[str, str] | None = None, ppid: int = 1,
                 start: int = RAYLET_START + 10, state: str = "S", comm: str | None = None) -> None:
    d = proc / str(pid)
    d.mkdir(parents=True)
    d.joinpath("cmdline").write_bytes(title + b"\0")
    d.joinpath("environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in (env or {}).items()) + b"\0")
    name = comm or title.decode().split("\0")[0][:15]
    # stat: pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    #       cutime cstime priority nice num_threads itrealvalue starttime ...
    rest = [state, str(ppid)] + ["0"] * 17 + [str(start), "0", "0"]
    d.joinpath("stat").write_text(f"{pid} ({name}) {' '.join(rest)}\n")
    d.joinpath("comm").write_text(name + "\n")


def ours(**extra: str) -> dict[str, str]:
    return {"PATH": "/usr/bin", "RAY_RAYLET_PID": str(RAYLET_PID), **extra}


def test_finds_this_sessions_engines_and_no_one_elses(tmp_path: Path):
    fake_process(tmp_path, 600, b"VLLM::EngineCore", env=ours())
    fake_process(tmp_path, 601, b"VLLM::Worker", env=ours(), ppid=600)
    fake_process(tmp_path, 700, b"VLLM::EngineCore", env={"RAY_RAYLET_PID": "999"})  # another service's session
    fake_process(tmp_path, 701, b"VLLM::EngineCore", env={})  # `vllm serve` outside Ray
    fake_process(tmp_path, 702, b"VLLM::EngineCore", env=ours(), start=RAYLET_START - 5)  # a recycled raylet pid
    fake_process(tmp_path, 703, b"ray::ServeReplica:llmserve:LLMReplica", env=ours())  # Ray's own: `ray stop`'s
    fake_process(tmp_path, 704, b"VLLM::Worker", env=ours(), state="Z")  # already dead, not yet reaped
    fake_process(tmp_path, 705, b"python -m pytest VLLM::EngineCore", env=ours())  # the title only mentioned
    session = RaySession(RAYLET_PID, RAYLET_START)
    assert session_engine_pids(session, tmp_path) == [600, 601]


def test_the_session_is_the_raylet_this_process_started(tmp_path: Path):
    fake_process(tmp_path, 499, b"/ray/raylet --node", ppid=42, start=900, comm="raylet")  # another driver's
    fake_process(tmp_path, RAYLET_PID, b"/ray/raylet --node", ppid=77, start=RAYLET_START, comm="raylet")
    fake_process(tmp_path, 501, b"/ray/gcs_server", ppid=77, comm="gcs_server")
    assert raylet_of(77, tmp_path) == RaySession(RAYLET_PID, RAYLET_START)
    assert raylet_of(78, tmp_path) is None


def test_engines_get_sigterm_then_sigkill_after_the_grace_period():
    sent: list[tuple[int, int]] = []
    now = [0.0]  # 600 exits on SIGTERM, 601 ignores it, 602 is already gone

    def send(pid: int, sig: int) -> None:
        if pid == 602:
            raise ProcessLookupError
        sent.append((pid, sig))

    def running(pid: int) -> bool:
        return pid == 601 or (pid == 600 and (600, 15) not in sent)

    def sleep(seconds: float) -> None:
        now[0] += seconds

    killed = end_processes([600, 601, 602], 10.0, send=send, running=running, clock=lambda: now[0], sleep=sleep)
    assert killed == [601]
    assert sent == [(600, 15), (601, 15), (601, 9)]
    assert 10.0 <= now[0] < 10.5


def test_stop_local_ends_engines_its_session_left_running(monkeypatch):
    """A real process titled as vLLM's engine, in a (made-up) session of ours, outlives its Ray: stop ends it."""
    import subprocess
    import sys

    import serve_app.local as local

    session = RaySession(raylet_pid=10**7, raylet_start_ticks=0)  # above any pid_max: no real raylet's
    engine = subprocess.Popen(["VLLM::EngineCore", "-c", "import time; time.sleep(60)"], executable=sys.executable,
                              env={"RAY_RAYLET_PID": str(session.raylet_pid)})
    try:
        deadline = time.monotonic() + 10
        while engine.pid not in session_engine_pids(session) and time.monotonic() < deadline:
            time.sleep(0.05)  # until the exec shows the title
        assert session_engine_pids(session) == [engine.pid]
        monkeypatch.setattr(local, "_ray_session", session, raising=False)
        monkeypatch.setattr(local, "_segments_before_start", None)
        # `make test` runs the unit tests in the process that still holds the integration tests' Ray:
        # this test must not shut that down (the app fixtures' teardown needs it).
        import ray

        monkeypatch.setattr(ray, "is_initialized", lambda: False)
        local.stop_local()
        assert engine.wait(timeout=5) == -15  # SIGTERM
    finally:
        engine.kill()
        engine.wait()


def test_a_stopped_replica_removes_the_segments_its_killed_engine_left(tmp_path: Path):
    """Serve calls `__del__` when it stops a replica (downscale, app deleted, shutdown); vLLM's
    shutdown kills an engine core that does not exit in time, whose segments then stay in /dev/shm."""
    import uuid

    from serve_app.deployments.replica import LLMReplica

    left = Path("/dev/shm") / f"psm_llmserve_test_{uuid.uuid4().hex[:8]}"

    class KilledEngine:
        def shutdown(self) -> None:
            left.write_bytes(b"x")  # as if created at start by the engine process just killed

    replica = object.__new__(LLMReplica)
    replica._shm_before = vllm_segments()
    replica._engine = KilledEngine()
    try:
        replica.__del__()
        assert not left.exists()
    finally:
        replica._engine = None  # no second shutdown when the object is collected
        left.unlink(missing_ok=True)


def test_an_engine_whose_title_hid_its_environment_is_found_by_its_record(tmp_path: Path):
    """vLLM's setproctitle zeroes /proc/<pid>/environ; the engine recorded its session at start instead."""
    proc, records = tmp_path / "proc", tmp_path / "records"
    fake_process(proc, RAYLET_PID, b"raylet", start=RAYLET_START)
    fake_process(proc, 800, b"VLLM::EngineCore", env={})  # environ unreadable as a session
    fake_process(proc, 801, b"VLLM::EngineCore", env={}, start=RAYLET_START + 20)  # recorded, then pid reused
    session = RaySession(RAYLET_PID, RAYLET_START)
    assert record_engine_process(800, ours(), proc_dir=proc, records_dir=records) is not None
    (records / f"{RAYLET_PID}-{RAYLET_START}" / "801").write_text(str(RAYLET_START + 15))
    assert record_engine_process(802, ours(), proc_dir=proc, records_dir=records) is None  # no such process
    assert record_engine_process(800, {}, proc_dir=proc, records_dir=records) is None  # outside Ray
    assert session_engine_pids(session, proc, records) == [800]
    assert session_engine_pids(RaySession(RAYLET_PID, RAYLET_START + 1), proc, records) == []
