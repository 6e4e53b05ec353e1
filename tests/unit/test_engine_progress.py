"""The stuck-engine verdict on a fake clock: only silence while the engine holds requests counts."""
import pytest

from serve_app.policy.engine_progress import EngineProgressWatch


def test_an_engine_that_keeps_stepping_is_never_stuck():
    watch = EngineProgressWatch(stuck_after_s=10)
    for second in range(100):
        watch.stepped(float(second))
        assert watch.check(second + 0.5, unfinished_requests=8) is None


def test_silence_while_holding_requests_past_the_limit_is_a_verdict():
    watch = EngineProgressWatch(stuck_after_s=10)
    watch.stepped(100.0)
    assert watch.check(100.0, unfinished_requests=4) is None
    assert watch.check(109.9, unfinished_requests=4) is None
    verdict = watch.check(110.5, unfinished_requests=4)
    assert verdict is not None and verdict.silent_for_s == pytest.approx(10.5) and verdict.unfinished_requests == 4
    assert "4 request(s)" in verdict.describe() and "10.5 s" in verdict.describe()


def test_idle_silence_does_not_count_the_clock_starts_when_work_arrives():
    watch = EngineProgressWatch(stuck_after_s=10)
    watch.stepped(0.0)
    assert watch.check(500.0, unfinished_requests=0) is None  # idle for minutes
    assert watch.check(501.0, unfinished_requests=1) is None  # work arrived; its first step not yet seen
    assert watch.check(510.5, unfinished_requests=1) is None
    assert watch.check(511.5, unfinished_requests=1) is not None


def test_an_engine_that_never_stepped_is_judged_from_when_it_was_given_work():
    watch = EngineProgressWatch(stuck_after_s=5)
    assert watch.check(20.0, unfinished_requests=2) is None
    assert watch.check(24.0, unfinished_requests=2) is None
    assert watch.check(25.0, unfinished_requests=2) is not None


def test_going_idle_resets_the_busy_clock():
    watch = EngineProgressWatch(stuck_after_s=10)
    assert watch.check(0.0, unfinished_requests=1) is None
    assert watch.check(8.0, unfinished_requests=0) is None
    assert watch.check(9.0, unfinished_requests=1) is None
    assert watch.check(18.0, unfinished_requests=1) is None
    assert watch.check(19.0, unfinished_requests=1) is not None


def test_the_limit_must_be_positive():
    with pytest.raises(ValueError):
        EngineProgressWatch(stuck_after_s=0)


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _engine(pids, unfinished=0):
    from types import SimpleNamespace

    processes = [SimpleNamespace(pid=pid) for pid in pids]
    engine = SimpleNamespace(errored=False, output_processor=SimpleNamespace(get_num_unfinished_requests=lambda: 0),
                             engine_core=SimpleNamespace(resources=SimpleNamespace(
                                 engine_manager=SimpleNamespace(processes=processes))))
    engine.unfinished = unfinished
    engine.output_processor.get_num_unfinished_requests = lambda: engine.unfinished
    return engine


def test_the_watchdog_kills_a_silent_busy_engines_process_once_and_leaves_a_stepping_one_alone():
    import signal
    from types import SimpleNamespace

    from serve_app.deployments.engine_watchdog import EngineWatchdog

    clock, sent = _Clock(), []
    engine, snapshot = _engine([4242], unfinished=3), SimpleNamespace(last_step_at=None)
    watchdog = EngineWatchdog(engine, snapshot, stuck_after_s=10, clock=clock, kill=lambda pid, sig: sent.append((pid, sig)))
    for second in range(1, 30):  # stepping every second: alive
        clock.now, snapshot.last_step_at = float(second), second - 0.5
        watchdog.tick()
    assert sent == [] and not watchdog.judged_stuck
    for second in range(30, 45):  # the core went silent at 28.5 s with 3 requests held
        clock.now = float(second)
        watchdog.tick()
    assert sent == [(4242, signal.SIGKILL)] and watchdog.killed == [4242]


def test_the_watchdog_judges_twice_so_that_steps_queued_behind_a_stalled_loop_count():
    from types import SimpleNamespace

    from serve_app.deployments.engine_watchdog import EngineWatchdog

    clock, sent = _Clock(), []
    snapshot = SimpleNamespace(last_step_at=0.0)
    watchdog = EngineWatchdog(_engine([7], unfinished=2), snapshot, stuck_after_s=10, clock=clock,
                              kill=lambda *a: sent.append(a))
    clock.now = 20.0  # the replica's loop was stalled: the first tick after it sees 20 s of silence
    watchdog.tick()
    snapshot.last_step_at = 20.1  # the output handler then ran the steps that were waiting
    clock.now = 21.0
    watchdog.tick()
    assert sent == [] and not watchdog.judged_stuck


def test_the_watchdog_leaves_a_dead_engine_to_vllm_and_an_idle_one_or_one_without_stats_alone():
    from types import SimpleNamespace

    from serve_app.deployments.engine_watchdog import EngineWatchdog

    clock, sent = _Clock(), []
    idle = EngineWatchdog(_engine([1], unfinished=0), SimpleNamespace(last_step_at=0.0), 10, clock, lambda *a: sent.append(a))
    dead_engine = _engine([2], unfinished=5)
    dead_engine.errored = True
    dead = EngineWatchdog(dead_engine, SimpleNamespace(last_step_at=0.0), 10, clock, lambda *a: sent.append(a))
    silent_engine = _engine([3], unfinished=5)
    silent_engine.log_stats = False  # no stats, no heartbeat: nothing to judge by
    silent = EngineWatchdog(silent_engine, SimpleNamespace(last_step_at=None), 10, clock, lambda *a: sent.append(a))
    for second in range(100):
        clock.now = float(second)
        idle.tick()
        dead.tick()
        silent.tick()
    assert sent == []


def test_engine_process_ids_read_vllms_launcher_and_are_empty_without_one():
    from types import SimpleNamespace

    from serve_app.deployments.engine_watchdog import engine_process_ids

    assert engine_process_ids(_engine([11, 12])) == [11, 12]
    assert engine_process_ids(SimpleNamespace()) == []
