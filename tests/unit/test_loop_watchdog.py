"""The loop watchdog for real: a loop in a thread, blocked by a coroutine that sleeps synchronously."""
import asyncio
import logging
import re
import threading
import time

import pytest

from serve_app.telemetry.loop_watchdog import LoopWatchdog, watch_event_loop, watch_running_loop

THRESHOLD_S = 0.2


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def wait_for(self, pattern: str, timeout_s: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [m for m in list(self.messages) if re.search(pattern, m)]
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError(f"no log line matching {pattern!r} in {self.messages}")


@pytest.fixture
def captured():
    log = logging.getLogger(f"test_loop_watchdog.{time.monotonic_ns()}")
    log.propagate = False
    handler = Captured()
    log.addHandler(handler)
    handler.log = log
    return handler


@pytest.fixture
def loop_in_thread():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="serving-loop", daemon=True)
    thread.start()
    yield loop
    wait_for_beats(loop)  # lets the stopped watchdog's beat task finish cancelling
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.close()


async def block_the_loop_for_a_while() -> None:
    time.sleep(THRESHOLD_S * 3)


def wait_for_beats(loop: asyncio.AbstractEventLoop) -> None:
    """One round trip through the loop, so the watchdog's first beat has run."""
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), loop).result(timeout=5)


def test_a_blocked_loop_logs_its_stack_the_other_threads_and_how_long_it_stopped(loop_in_thread, captured):
    bystander_stop = threading.Event()

    def bystander_waits_for_its_event() -> None:
        bystander_stop.wait()

    bystander = threading.Thread(target=bystander_waits_for_its_event, name="bystander", daemon=True)
    bystander.start()
    watchdog = watch_event_loop(loop_in_thread, threshold_s=THRESHOLD_S, period_s=0.02, log=captured.log)
    try:
        wait_for_beats(loop_in_thread)
        asyncio.run_coroutine_threadsafe(block_the_loop_for_a_while(), loop_in_thread).result(timeout=5)
        [finished] = captured.wait_for(r"event loop was stopped for")
        stall_dumps = [m for m in captured.messages if "block_the_loop_for_a_while" in m]
        summary = watchdog.summary()
    finally:
        watchdog.stop()
        bystander_stop.set()
    assert len(stall_dumps) == 1, captured.messages
    loop_part, _, others = stall_dumps[0].partition("--- thread")
    assert "event loop stalled" in loop_part and "'serving-loop'" in loop_part
    assert "block_the_loop_for_a_while" in loop_part and "time.sleep" in loop_part
    assert "'bystander'" in others and "bystander_waits_for_its_event" in others
    assert "'loop-watchdog'" not in stall_dumps[0]  # the watchdog does not dump itself
    stopped_s = float(re.search(r"stopped for ([0-9.]+) s", finished).group(1))
    assert THRESHOLD_S * 3 - 0.05 <= stopped_s < THRESHOLD_S * 3 + 1.0
    assert summary["stalls"] >= 1 and summary["max_stall_s"] >= THRESHOLD_S * 3 - 0.05
    assert summary["threshold_s"] == THRESHOLD_S


def test_a_second_stall_within_the_rate_limit_is_reported_without_stacks(loop_in_thread, captured):
    watchdog = LoopWatchdog(loop_in_thread, THRESHOLD_S, 0.02, captured.log, stack_dump_interval_s=60.0).start()
    try:
        wait_for_beats(loop_in_thread)
        for _ in range(2):
            asyncio.run_coroutine_threadsafe(block_the_loop_for_a_while(), loop_in_thread).result(timeout=5)
            wait_for_beats(loop_in_thread)
        captured.wait_for(r"stacks not dumped again")
        deadline = time.monotonic() + 5.0
        while watchdog.summary()["stalls"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        watchdog.stop()
    assert len([m for m in captured.messages if "block_the_loop_for_a_while" in m]) == 1
    assert len([m for m in captured.messages if "event loop was stopped for" in m]) >= 2


def test_the_process_watchdog_needs_a_running_loop_and_a_threshold():
    assert watch_running_loop(5.0) is None  # no loop runs in this thread

    async def inside_a_loop():
        assert watch_running_loop(0.0) is None  # 0 turns it off
        first = watch_running_loop(5.0)
        assert first is not None and first.running and first.loop is asyncio.get_running_loop()
        assert watch_running_loop(5.0) is first  # deployments in one process share it
        first.stop()
        return first

    stopped = asyncio.run(inside_a_loop())
    assert not stopped.running


def test_the_beat_must_come_well_within_the_threshold():
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError):
            LoopWatchdog(loop, threshold_s=0.2, period_s=0.5, log=logging.getLogger(__name__))
    finally:
        loop.close()


def test_a_serving_process_is_watched_as_its_settings_say():
    from serve_app.config import ProcessSettings
    from serve_app.telemetry.gc_pauses import prepare_process_for_serving

    def prepared(loop_stall_warning_s: float):
        settings = ProcessSettings(freeze_gc_after_start=False, full_gc="python",
                                   loop_stall_warning_s=loop_stall_warning_s)
        return prepare_process_for_serving(settings, in_flight=lambda: 0)

    async def inside_a_loop():
        off = prepared(0.0)
        on = prepared(3.0)
        on.loop_watchdog.stop()
        return off, on

    off, on = asyncio.run(inside_a_loop())
    assert off.loop_watchdog is None and off.loop_stalls() is None
    assert on.loop_stalls() == {"stalls": 0, "unseen_stalls": 0, "max_stall_s": 0.0, "last_stall_s": None,
                                "threshold_s": 3.0, "lag_recent": {"n": 0, "p50_s": None, "p99_s": None, "max_s": None},
                                "cpu_recent": {"process": None, "loop_thread": None, "over_s": None}}
    assert prepared(3.0).loop_watchdog is None  # started outside a loop: skipped quietly


async def hold_the_gil_in_one_c_call() -> None:
    # One C call with no bytecode boundary inside: the interpreter never hands the GIL to the
    # watchdog thread until it returns (about 1 s here).
    sum(range(8 * 10**7))


def test_a_stall_with_the_gil_held_still_prints_every_stack_through_faulthandler(loop_in_thread, captured, tmp_path):
    backstop = (tmp_path / "stderr").open("w+")
    watchdog = watch_event_loop(loop_in_thread, threshold_s=0.1, period_s=0.02, log=captured.log, backstop_s=0.2,
                                backstop_file=backstop)
    try:
        wait_for_beats(loop_in_thread)
        asyncio.run_coroutine_threadsafe(hold_the_gil_in_one_c_call(), loop_in_thread).result(timeout=30)
        captured.wait_for(r"event loop was stopped for")
    finally:
        watchdog.stop()
    backstop.seek(0)
    printed = backstop.read()
    assert "Timeout (0:00:00.2" in printed and "hold_the_gil_in_one_c_call" in printed
    # Disarmed with the watchdog: nothing more is printed afterwards.
    time.sleep(0.3)
    backstop.seek(0)
    assert backstop.read() == printed


def test_a_loop_running_late_shows_its_lag_before_any_stall(loop_in_thread, captured):
    watchdog = watch_event_loop(loop_in_thread, threshold_s=1.0, period_s=0.02, log=captured.log)

    async def late_for_a_moment() -> None:
        time.sleep(0.3)  # under the stall threshold: no stall, a late beat

    async def summary_on_the_loop() -> dict:
        await asyncio.sleep(0.1)  # a few beats after the late one
        return watchdog.summary()

    try:
        wait_for_beats(loop_in_thread)
        asyncio.run_coroutine_threadsafe(late_for_a_moment(), loop_in_thread).result(timeout=5)
        summary = asyncio.run_coroutine_threadsafe(summary_on_the_loop(), loop_in_thread).result(timeout=5)
    finally:
        watchdog.stop()
    assert summary["stalls"] == 0
    lag = summary["lag_recent"]
    assert lag["n"] >= 3 and 0.25 <= lag["max_s"] < 1.0 and lag["p50_s"] < 0.1
    # time.sleep holds no CPU: the loop thread was mostly idle over the beats' span.
    cpu = summary["cpu_recent"]
    assert cpu["over_s"] >= 0.3 and 0 <= cpu["loop_thread"] < 0.5


def test_a_loop_busy_in_python_shows_its_thread_near_one_cpu_second_per_second(loop_in_thread, captured):
    watchdog = watch_event_loop(loop_in_thread, threshold_s=5.0, period_s=0.02, log=captured.log)

    async def busy_in_slices() -> dict:
        # Python work in short slices (as per-token handling is): beats still run between them.
        until = time.monotonic() + 0.6
        while time.monotonic() < until:
            sum(range(20000))
            await asyncio.sleep(0)
        return watchdog.summary()

    try:
        wait_for_beats(loop_in_thread)
        summary = asyncio.run_coroutine_threadsafe(busy_in_slices(), loop_in_thread).result(timeout=10)
    finally:
        watchdog.stop()
    cpu = summary["cpu_recent"]
    assert cpu["loop_thread"] > 0.6 and cpu["process"] >= cpu["loop_thread"] - 0.05
