import pytest

from serve_app.policy.loop_stall import FinishedStall, StallDetector, StallReport, StallTotals


def beat_every(detector: StallDetector, start: float, end: float, period_s: float) -> float:
    """Regular beats from `start` up to `end`, each followed by a check; returns the last beat's time."""
    now = start
    while now <= end:
        assert detector.beat(now) is None
        assert detector.check(now + period_s / 2) is None
        now += period_s
    return now - period_s


def test_regular_beats_are_never_a_stall():
    detector = StallDetector(threshold_s=5.0, now=0.0)
    beat_every(detector, 0.5, 100.0, 0.5)
    assert detector.totals == StallTotals()


def test_a_stall_is_reported_once_then_measured_when_the_loop_beats_again():
    detector = StallDetector(threshold_s=5.0, now=0.0)
    last = beat_every(detector, 0.5, 10.0, 0.5)
    assert detector.check(last + 5.0) is None  # exactly the threshold: not yet
    assert detector.check(last + 5.5) == StallReport(last_beat_at=last, stopped_for_s=5.5, dump_stacks=True)
    for later in (last + 6.0, last + 20.0, last + 41.0):
        assert detector.check(later) is None  # the same stall is not reported again
    assert detector.beat(last + 41.2) == FinishedStall(length_s=pytest.approx(41.2), seen_while_stopped=True)
    assert detector.totals == StallTotals(stalls=1, unseen_stalls=0, max_stall_s=pytest.approx(41.2),
                                          last_stall_s=pytest.approx(41.2))
    assert detector.check(last + 41.3) is None


def test_a_stall_no_check_saw_is_still_measured_and_counted_as_unseen():
    # The watchdog thread also needs the GIL: a thread holding it through a long C call stops both.
    detector = StallDetector(threshold_s=5.0, now=0.0)
    finished = detector.beat(12.0)
    assert finished == FinishedStall(length_s=12.0, seen_while_stopped=False)
    assert detector.totals == StallTotals(stalls=1, unseen_stalls=1, max_stall_s=12.0, last_stall_s=12.0)


def test_totals_keep_the_longest_and_the_last_stall():
    detector = StallDetector(threshold_s=1.0, now=0.0)
    detector.check(3.0)
    detector.beat(9.0)  # 9 s, seen
    detector.beat(12.0)  # 3 s, unseen
    detector.beat(12.5)  # not a stall
    assert detector.totals == StallTotals(stalls=2, unseen_stalls=1, max_stall_s=9.0, last_stall_s=3.0)


def test_stack_dumps_are_rate_limited_but_every_stall_is_reported():
    detector = StallDetector(threshold_s=1.0, now=0.0, stack_dump_interval_s=60.0)
    assert detector.check(2.0).dump_stacks is True
    detector.beat(3.0)
    assert detector.check(30.0).dump_stacks is False  # 28 s after the last dump
    detector.beat(31.0)
    assert detector.check(61.0).dump_stacks is False  # 59 s
    detector.beat(61.5)
    report = detector.check(63.0)  # 62 s after the last dump
    assert report.dump_stacks is True and report.stopped_for_s == pytest.approx(1.5)
    assert detector.totals.stalls == 3


@pytest.mark.parametrize("threshold_s, interval_s", [(0.0, 60.0), (-1.0, 60.0), (1.0, -1.0)])
def test_nonsense_settings_are_refused(threshold_s, interval_s):
    with pytest.raises(ValueError):
        StallDetector(threshold_s, now=0.0, stack_dump_interval_s=interval_s)
