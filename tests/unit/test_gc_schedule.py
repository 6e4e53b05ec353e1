import pytest

from serve_app.policy.gc_schedule import FullCollectionPolicy, FullCollectionSchedule


def test_a_quiet_process_collects_at_most_every_min_interval():
    schedule = FullCollectionSchedule(FullCollectionPolicy(min_interval_s=10, max_interval_s=120), now=0.0)
    assert not schedule.due(5.0, in_flight=0)
    assert schedule.due(10.0, in_flight=0)
    schedule.collected(10.0)
    assert not schedule.due(15.0, in_flight=0)


def test_a_busy_process_waits_for_quiet_until_the_max_interval():
    schedule = FullCollectionSchedule(FullCollectionPolicy(quiet_in_flight=2, min_interval_s=10,
                                                           max_interval_s=60), now=0.0)
    assert not schedule.due(30.0, in_flight=500)
    assert schedule.due(30.0, in_flight=2)  # a lull during the flood is enough
    assert not schedule.due(59.9, in_flight=500)
    assert schedule.due(60.0, in_flight=500)
    schedule.collected(60.0)
    assert not schedule.due(61.0, in_flight=500)


@pytest.mark.parametrize("kwargs", [{"quiet_in_flight": -1}, {"min_interval_s": 0},
                                    {"min_interval_s": 30, "max_interval_s": 20}])
def test_nonsense_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        FullCollectionPolicy(**kwargs)
