"""Says in the process's log what its asyncio loop was doing when it stops.

A Serve replica whose loop stops answers no health check, and Serve kills it after three misses,
leaving nothing that says why. Here a task on the loop beats every `period_s`; a daemon thread
("loop-watchdog") feeds those beats to a `StallDetector` and, on a stall, logs the loop thread's
Python stack and every other thread's (the loop may be waiting for the GIL another thread holds).
The loop itself only stores a timestamp: it takes no lock, so a watchdog stuck in a log handler
cannot stop it. A thread that holds the GIL for the whole stall (a long C call) stops the watchdog
thread too; for that, each beat also re-arms Python's own C-level timer (`faulthandler`), which
prints every thread's stack to stderr (the replica's log) once the loop has not beaten for
`backstop_s`. No Ray or vLLM import.
"""
from __future__ import annotations

import asyncio
import dataclasses
import faulthandler
import logging
import sys
import threading
import time
import traceback
from concurrent.futures import Future

from serve_app.policy.loop_stall import FinishedStall, StallDetector, StallReport
from serve_app.policy.recent_latency import RecentLatencies
from serve_app.telemetry.cpu_share import CpuReading, CpuShare
from serve_app.telemetry.log_names import service_logger

logger = service_logger("loop_watchdog")

WATCHDOG_THREAD_NAME = "loop-watchdog"
RECENT_S = 10.0  # the span `summary`'s recent lag and CPU figures cover


def thread_stacks(loop_thread_ident: int | None, skip_ident: int) -> str:
    """The loop thread's Python stack first, then every other thread's but `skip_ident`'s.

    `sys._current_frames` copies the frame pointers under the GIL only; formatting reads source
    lines through `linecache` outside any lock the loop could need."""
    frames = sys._current_frames()
    names = {thread.ident: thread.name for thread in threading.enumerate()}

    def stack(ident: int) -> str:
        return "".join(traceback.format_stack(frames[ident]))

    parts = []
    if loop_thread_ident in frames:
        parts.append(f"stack of the event loop's thread {names.get(loop_thread_ident, loop_thread_ident)!r}:\n"
                     f"{stack(loop_thread_ident)}")
    else:
        parts.append("the event loop's thread is not known yet (no beat so far)\n")
    for ident in sorted(frames, key=lambda i: str(names.get(i, i))):
        if ident not in (loop_thread_ident, skip_ident):
            parts.append(f"--- thread {names.get(ident, ident)!r} ({ident}):\n{stack(ident)}")
    return "".join(parts)


class LoopWatchdog:
    def __init__(self, loop: asyncio.AbstractEventLoop, threshold_s: float, period_s: float,
                 log: logging.Logger, stack_dump_interval_s: float = 60.0, backstop_s: float | None = None,
                 backstop_file=None) -> None:
        if not 0 < period_s < threshold_s:
            raise ValueError(f"need 0 < period_s < threshold_s, got {period_s}, {threshold_s}")
        self.loop = loop
        self._period_s = period_s
        self._log = log
        self._detector = StallDetector(threshold_s, time.monotonic(), stack_dump_interval_s)
        self._last_beat_at: float | None = None  # written by the loop, read by the watchdog thread
        # How late each beat woke, on the loop thread only (written by beats, read by `summary` there):
        # a loop falling behind its ready callbacks shows here long before it stalls outright.
        self._lags = RecentLatencies(horizon_s=RECENT_S)
        self._cpu = CpuShare(horizon_s=RECENT_S)  # read at each beat, on the loop thread: its own CPU is measurable
        self._loop_thread_ident: int | None = None
        self._stop = threading.Event()
        self._beats: Future | None = None
        self._thread = threading.Thread(target=self._watch, name=WATCHDOG_THREAD_NAME, daemon=True)
        # Process-wide (faulthandler keeps one timer): only the process's own watchdog sets it.
        self._backstop_s, self._backstop_file = backstop_s, backstop_file
        # The loop's beat re-arms the backstop and `stop` disarms it from another thread: one at a time, or a
        # beat that checked `_stop` just before it was set re-arms it after `stop` (seen once on CI).
        self._backstop_lock = threading.Lock()

    def start(self) -> LoopWatchdog:
        self._beats = asyncio.run_coroutine_threadsafe(self._beat_forever(), self.loop)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._backstop_lock:
            self._stop.set()
            if self._backstop_s is not None:
                faulthandler.cancel_dump_traceback_later()
        if self._beats is not None:
            self._beats.cancel()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5 * self._period_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def summary(self) -> dict:
        """Totals since start: `stalls`, `unseen_stalls`, `max_stall_s`, `last_stall_s`, `threshold_s`; and
        `lag_recent`, how late the beats woke over the last 10 s (n, p50_s, p99_s, max_s); `cpu_recent`, the
        process's and the loop thread's CPU seconds per second over the same span (`CpuShare`). Call it on the loop."""
        lag = self._lags.summary(time.monotonic()).get("lag", {"n": 0, "p50_s": None, "p99_s": None, "max_s": None})
        return {**dataclasses.asdict(self._detector.totals), "threshold_s": self._detector.threshold_s,
                "lag_recent": lag, "cpu_recent": self._cpu.summary()}

    async def _beat_forever(self) -> None:
        self._loop_thread_ident = threading.get_ident()
        while True:
            now = time.monotonic()
            if self._last_beat_at is not None:
                self._lags.add("lag", now, max(0.0, now - self._last_beat_at - self._period_s))
            self._last_beat_at = now
            self._cpu.add(CpuReading(now, time.process_time(), time.thread_time()))
            if self._backstop_s is not None:
                with self._backstop_lock:
                    if not self._stop.is_set():
                        faulthandler.dump_traceback_later(self._backstop_s, file=self._backstop_file or sys.stderr)
            await asyncio.sleep(self._period_s)

    def _watch(self) -> None:
        seen_beat_at = None
        while not self._stop.wait(self._period_s):
            if self.loop.is_closed():
                return
            beat_at = self._last_beat_at
            try:
                if beat_at is not None and beat_at != seen_beat_at:
                    seen_beat_at = beat_at
                    finished = self._detector.beat(beat_at)
                    if finished is not None:
                        self._log_finished(finished)
                report = self._detector.check(time.monotonic())
                if report is not None:
                    self._log_stall(report)
            except Exception:  # a failed dump must not end the watch
                self._log.exception("loop watchdog: reporting a stall failed")

    def _log_stall(self, report: StallReport) -> None:
        head = (f"event loop stalled: no heartbeat for {report.stopped_for_s:.2f} s "
                f"(threshold {self._detector.threshold_s:g} s)")
        if not report.dump_stacks:
            self._log.warning("%s; stacks not dumped again within the rate limit", head)
            return
        self._log.warning("%s; %s", head, thread_stacks(self._loop_thread_ident, threading.get_ident()))

    def _log_finished(self, finished: FinishedStall) -> None:
        unseen = "" if finished.seen_while_stopped else (
            " (the watchdog did not run while it lasted: a thread held the GIL, so no stack)")
        self._log.warning("event loop was stopped for %.2f s%s", finished.length_s, unseen)


def watch_event_loop(loop: asyncio.AbstractEventLoop, threshold_s: float = 5.0, period_s: float = 0.5,
                     log: logging.Logger = logger, backstop_s: float | None = None, backstop_file=None) -> LoopWatchdog:
    """Starts watching `loop` (callable from any thread); `stop()` ends it. `backstop_s`: also arm
    faulthandler's process-wide timer (for stalls with the GIL held), writing to `backstop_file`
    (default stderr)."""
    return LoopWatchdog(loop, threshold_s, period_s, log, backstop_s=backstop_s, backstop_file=backstop_file).start()


_process_watchdog: LoopWatchdog | None = None


def watch_running_loop(threshold_s: float) -> LoopWatchdog | None:
    """The one watchdog of the running loop in this process (deployments sharing a process share
    it); None when `threshold_s` is 0 or no loop is running here."""
    global _process_watchdog
    if threshold_s <= 0:
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    if _process_watchdog is None or _process_watchdog.loop is not loop or not _process_watchdog.running:
        if _process_watchdog is not None:
            _process_watchdog.stop()
        # The beat must come well within the threshold, or a busy but healthy loop reads as stalled.
        # The C-level backstop fires later than the watchdog thread would, so it speaks only when that
        # thread could not (the GIL held throughout).
        _process_watchdog = watch_event_loop(loop, threshold_s, period_s=min(0.5, threshold_s / 4),
                                             backstop_s=2 * threshold_s)
    return _process_watchdog
