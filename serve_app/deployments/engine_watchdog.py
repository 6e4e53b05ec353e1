"""The replica's shell around `EngineProgressWatch`: once a second, the engine's last step (its stats) and
the requests it holds; on a verdict, the engine's process is killed, so that vLLM declares the engine dead
(started streams end with an error event, the replica's calls fail over) and Ray Serve's health check
replaces the replica: also its GPU memory is freed for the replacement, which a hung process would hold."""
from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any, Callable

from serve_app.policy.engine_progress import EngineProgressWatch
from serve_app.telemetry.log_names import service_logger

logger = service_logger("engine_watchdog")


def engine_process_ids(engine: Any) -> list[int]:
    """The pids of the engine's core processes on this host, as vLLM's launcher started them (for an operator's
    profiler, this watchdog, a fault test); empty where the core runs in this process or vLLM keeps no list."""
    manager = getattr(getattr(getattr(engine, "engine_core", None), "resources", None), "engine_manager", None)
    return [process.pid for process in getattr(manager, "processes", None) or [] if process.pid is not None]


class EngineWatchdog:
    def __init__(self, engine: Any, snapshot: Any, stuck_after_s: float,
                 clock: Callable[[], float] = time.monotonic, kill: Callable[[int, int], None] = os.kill):
        """`engine`: vLLM's `AsyncLLM`; `snapshot`: its `EngineSnapshot` (`last_step_at` on `clock`)."""
        self._engine, self._snapshot = engine, snapshot
        self._watch = EngineProgressWatch(stuck_after_s)
        self._clock, self._kill = clock, kill
        self.judged_stuck = self._suspected = False
        self.killed: list[int] = []

    async def run_forever(self, period_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(period_s)
            self.tick()

    def tick(self) -> None:
        if self.judged_stuck or self._engine.errored:  # vLLM fails its requests; the health check replaces the replica
            return
        if not getattr(self._engine, "log_stats", True):  # stats turned off (`engine.extra`): no heartbeat to judge by
            return
        if self._snapshot.last_step_at is not None:
            self._watch.stepped(self._snapshot.last_step_at)
        verdict = self._watch.check(self._clock(), self._engine.output_processor.get_num_unfinished_requests())
        if verdict is None:
            self._suspected = False
            return
        if not self._suspected:  # judged again next tick: steps queued behind a stalled event loop count by then
            self._suspected = True
            return
        self.judged_stuck, pids = True, engine_process_ids(self._engine)
        logger.error("%s: killing its process %s, so that its requests fail over and Ray Serve replaces this "
                     "replica", verdict.describe(), pids)
        for pid in pids:
            try:
                self._kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended meanwhile
                continue
            self.killed.append(pid)
