"""The replica's vLLM engine process is forked from its fork server (`serve_app.engine_forkserver`), which
a replica starts before it imports vLLM, and it serves; the session's left-over engine cleanup finds it."""
from __future__ import annotations

import os
from pathlib import Path

import httpx

from serve_app.engine_processes import raylet_of, session_engine_pids


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def _readable(path: Path) -> bool:
    try:
        path.read_bytes()
    except OSError:
        return False
    return True


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2:].split()[1])


def test_engine_process_is_forked_from_the_preloaded_fork_server(base_url, model_name):
    reply = httpx.post(f"{base_url}/v1/completions", timeout=60,
                       json={"model": model_name, "prompt": "t10 t11", "max_tokens": 4, "temperature": 0})
    assert reply.status_code == 200, reply.text
    engines = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/cmdline")
               if _readable(p) and _cmdline(int(p.parent.name)).startswith("VLLM::EngineCore")]
    assert engines, "no engine process"
    for engine in engines:
        server = _ppid(engine)
        assert "multiprocessing.forkserver" in _cmdline(server) and "serve_app.engine_preload" in _cmdline(server)
        replica = _ppid(server)
        assert "LLMReplica" in _cmdline(replica), _cmdline(replica)
    # What `llmserve run` ends if a replica leaves its engine behind: found by its record, since vLLM's
    # process title has overwritten the environment /proc shows.
    session = raylet_of(os.getpid())
    if session is not None:  # None: the app was started by another process (LLMSERVE_TEST_URL)
        assert set(engines) <= set(session_engine_pids(session))
