"""The vLLM engine's process, forked from a fork server that imported torch and vLLM while the replica did.

Inside a Ray actor vLLM starts its `EngineCore` process with `spawn`: a fresh interpreter that imports
torch and vLLM again, after the replica has imported them itself. On an H200 host that was 18 s of a
58 s warm replica start, after the replica's own 20 s of imports (benchmarks/results/autoscaling_h200).
A fork server started before the replica imports vLLM does those imports at the same time, and the
engine process is forked from it ready-made.

Why a fork server and not a plain fork: vLLM refuses `fork` inside Ray actors because the actor holds
Ray's threads and gRPC state; the fork server is a fresh single-threaded interpreter that never touches
Ray or CUDA, the same state `vllm serve`'s API server forks its engine from.

The replica's Ray worker gets `ENV_FLAG` in its environment (`serve_app.replica_options`), and the replica
module calls `prestart_if_requested()` before its vLLM imports; `use_for_engine()` then points vLLM's
engine launcher at the server. Without the flag nothing changes (tests, the driver, `spawn` chosen).
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import sys

from serve_app.engine_processes import record_engine_process
from serve_app.telemetry.log_names import service_logger

logger = service_logger("engine_forkserver")

ENV_FLAG = "LLMSERVE_ENGINE_FORKSERVER"
PRELOAD_MODULE = "serve_app.engine_preload"


def requested() -> bool:
    return os.environ.get(ENV_FLAG) == "1"


def prestart_if_requested() -> None:
    """Start the fork server now, so that it imports the engine's modules while this process imports its own."""
    if requested():
        start()


def start() -> None:
    multiprocessing.set_forkserver_preload([PRELOAD_MODULE])
    multiprocessing.forkserver.ensure_running()  # returns at once; the server imports on its own


class EnvironmentCarryingProcess(multiprocessing.context.ForkServerProcess):
    """A fork server's child has the server's environment, frozen when it started; vLLM sets variables
    (threads, device lists) just before `start()`, as `spawn` would pass them on. This takes them along."""

    def start(self) -> None:
        self._start_environ = dict(os.environ)
        super().start()

    def run(self) -> None:
        _init_process_title()
        os.environ.clear()
        os.environ.update(self._start_environ)
        try:
            record_engine_process(os.getpid(), self._start_environ)
        except Exception as error:  # noqa: BLE001 - the left-over cleanup then misses this engine; serving must not
            logger.warning("engine process %d could not record itself: %s", os.getpid(), error)
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit() and "torch" in sys.modules:  # torch read it when the server imported it
            sys.modules["torch"].set_num_threads(int(threads))
        super().run()


def _init_process_title() -> None:
    """setproctitle takes its room from the argv and environ strings the process started with, and finds
    them only while `environ` still points there: before the environment is replaced (vLLM names the
    process `VLLM::EngineCore` later, and `serve_app.engine_processes` finds engines by that name)."""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(setproctitle.getproctitle())


class EngineForkServerContext(multiprocessing.context.ForkServerContext):
    Process = EnvironmentCarryingProcess


def use_for_engine() -> None:
    """vLLM's engine launcher starts its processes from the fork server (it looks `get_mp_context` up in its
    own module, so that is the name replaced)."""
    from vllm.v1.engine import utils as engine_utils

    context = EngineForkServerContext()
    engine_utils.get_mp_context = lambda: context
    logger.info("engine process: forked from a fork server that preloaded %s", PRELOAD_MODULE)
