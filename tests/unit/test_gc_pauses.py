import gc
import threading

import pytest

from serve_app.telemetry.gc_pauses import GcPauses, freeze_startup_heap


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def collect(pauses: GcPauses, clock: FakeClock, generation: int, seconds: float) -> None:
    pauses.on_gc("start", {"generation": generation})
    clock.now += seconds
    pauses.on_gc("stop", {"generation": generation, "collected": 0, "uncollectable": 0})


def test_pauses_are_timed_per_generation_with_totals_and_a_recent_window():
    clock = FakeClock()
    pauses = GcPauses(clock, horizon_s=10.0)
    collect(pauses, clock, 0, 0.001)
    collect(pauses, clock, 2, 0.300)
    clock.now = 5.0
    collect(pauses, clock, 0, 0.003)
    summary = pauses.summary()
    assert summary["gen0"]["count"] == 2 and summary["gen0"]["total_s"] == pytest.approx(0.004)
    assert summary["gen0"]["max_s"] == pytest.approx(0.003)
    assert summary["gen2"]["recent"]["n"] == 1 and summary["gen2"]["recent"]["max_s"] == pytest.approx(0.3)
    assert pauses.recent_max_s() == pytest.approx(0.3)
    clock.now = 20.0  # the full collection left the 10 s window; the totals keep it
    assert pauses.summary()["gen2"]["recent"]["n"] == 0
    assert pauses.summary()["gen2"]["max_s"] == pytest.approx(0.3)
    assert pauses.recent_max_s() is None


def test_a_stop_without_its_start_is_ignored():
    clock = FakeClock()
    pauses = GcPauses(clock)
    pauses.on_gc("stop", {"generation": 2})
    assert pauses.summary() == {}


def test_installed_recorder_sees_real_collections_and_uninstalls():
    pauses = GcPauses().install()
    try:
        gc.collect()
        summary = pauses.summary()
        assert summary["gen2"]["count"] >= 1
        assert summary["gen2"]["max_s"] > 0
    finally:
        pauses.uninstall()
    count = pauses.summary()["gen2"]["count"]
    gc.collect()
    assert pauses.summary()["gen2"]["count"] == count


def test_freezing_moves_the_heap_out_of_full_collections():
    try:
        frozen = freeze_startup_heap()
        assert frozen > 1000
        # Frozen objects are still freed by reference counting (other threads of a full test run
        # do), but none are added.
        assert gc.get_freeze_count() <= frozen
        # A full collection now walks only what was made after the freeze.
        assert len(gc.get_objects(2)) < frozen
    finally:
        gc.unfreeze()


def test_scheduled_full_collections_replace_pythons_trigger_and_run_when_quiet():
    import time

    from serve_app.policy.gc_schedule import FullCollectionPolicy
    from serve_app.telemetry.gc_pauses import NO_AUTOMATIC_FULL_COLLECTIONS, schedule_full_collections

    saved = gc.get_threshold()
    pauses = GcPauses().install()
    in_flight = {"n": 5}
    stop = threading.Event()
    try:
        thread = schedule_full_collections(FullCollectionPolicy(min_interval_s=0.2, max_interval_s=60),
                                           lambda: in_flight["n"], check_period_s=0.05, stop=stop)
        assert gc.get_threshold()[2] == NO_AUTOMATIC_FULL_COLLECTIONS
        time.sleep(0.5)
        assert "gen2" not in pauses.summary()  # busy: nothing yet
        in_flight["n"] = 0
        deadline = time.monotonic() + 5
        while "gen2" not in pauses.summary():
            assert time.monotonic() < deadline, "no full collection once quiet"
            time.sleep(0.05)
    finally:
        stop.set()
        pauses.uninstall()
        gc.set_threshold(*saved)
    thread.join(timeout=5)
    assert not thread.is_alive()
