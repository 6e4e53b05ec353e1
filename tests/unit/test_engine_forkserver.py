"""The engine fork server's children: forked from the server (not from the caller), with the caller's
environment as it was at `start()`, as `spawn` would give them."""
from __future__ import annotations

import os

from serve_app.config import parse_config
from serve_app.engine_forkserver import ENV_FLAG, EngineForkServerContext
from serve_app.replica_options import replica_env

PROBE = "LLMSERVE_TEST_SET_AFTER_SERVER_START"


def _report(queue, name: str) -> None:
    queue.put((os.getppid(), os.environ.get(name), os.environ.get("OMP_NUM_THREADS")))


def test_child_is_forked_by_the_server_and_gets_the_environment_of_its_start():
    context = EngineForkServerContext()
    queue = context.Queue()
    warm_up = context.Process(target=_report, args=(queue, PROBE))
    warm_up.start()  # starts the fork server with this environment
    warm_up.join(60)
    server_parent, before, _ = queue.get(timeout=10)
    assert before is None
    assert server_parent != os.getpid()  # the fork server's child, not ours

    os.environ[PROBE] = "set-later"
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        child = context.Process(target=_report, args=(queue, PROBE))
        child.start()
        child.join(60)
    finally:
        del os.environ[PROBE]
        os.environ.pop("OMP_NUM_THREADS")
    parent, seen, threads = queue.get(timeout=10)
    assert child.exitcode == 0
    assert parent == server_parent
    assert (seen, threads) == ("set-later", "1")


def test_replicas_start_their_engine_from_the_fork_server_unless_spawn_is_chosen():
    assert replica_env(parse_config({}))[ENV_FLAG] == "1"
    assert ENV_FLAG not in replica_env(parse_config({"replicas": {"engine_process_start": "spawn"}}))
