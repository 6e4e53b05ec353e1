import pytest

from serve_app.telemetry.cpu_share import CpuReading, CpuShare


def test_nothing_is_said_before_two_readings():
    share = CpuShare()
    assert share.summary() == {"process": None, "loop_thread": None, "over_s": None}
    share.add(CpuReading(0.0, 5.0, 1.0))
    assert share.summary()["process"] is None


def test_share_is_cpu_seconds_per_wall_second_over_the_horizon():
    share = CpuShare(horizon_s=10.0)
    # A busy loop thread (0.9 s per s) with 0.5 s per s more from other threads, for 20 s of beats.
    for tick in range(0, 41):
        wall = tick * 0.5
        share.add(CpuReading(wall, 1.4 * wall, 0.9 * wall))
    assert share.summary() == {"process": pytest.approx(1.4), "loop_thread": pytest.approx(0.9),
                               "over_s": pytest.approx(10.0)}


def test_an_idle_spell_after_a_busy_one_leaves_the_horizon():
    share = CpuShare(horizon_s=2.0)
    share.add(CpuReading(0.0, 0.0, 0.0))
    share.add(CpuReading(1.0, 1.0, 1.0))  # busy second
    for wall in (2.0, 3.0, 4.0, 5.0):  # idle from here on
        share.add(CpuReading(wall, 1.0, 1.0))
    assert share.summary()["loop_thread"] == 0.0


def test_the_horizon_must_be_positive():
    with pytest.raises(ValueError):
        CpuShare(horizon_s=0)
