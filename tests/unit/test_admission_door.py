"""The ingress's door: refuses at once a class the router just refused for overload; asks the
router in the background once the refusal is `hold_s` old."""
from __future__ import annotations

import pytest

from serve_app.policy.admission import AdmissionPreview
from serve_app.policy.admission_door import AdmissionDoor
from serve_app.policy.priority_classes import PriorityClass, PriorityClasses


def classes() -> PriorityClasses:
    return PriorityClasses([
        PriorityClass("high", 0, ttft_slo_s=0.5, tpot_slo_s=0.05, queue_deadline_s=2.0),
        PriorityClass("mid", 1, ttft_slo_s=2.0, tpot_slo_s=0.1, queue_deadline_s=10.0),
        PriorityClass("low", 2, ttft_slo_s=10.0, tpot_slo_s=0.2, queue_deadline_s=30.0),
    ])


def test_an_open_door_sends_requests_to_the_router():
    door = AdmissionDoor(classes(), hold_s=0.5)
    assert door.check("low", now=0.0) is None
    assert not door.needs_query(0.0)


def test_a_refused_class_and_those_below_it_are_refused_at_the_door():
    door = AdmissionDoor(classes(), hold_s=0.5)
    door.router_refused("mid", "predicted wait 12s", retry_after_s=12, now=10.0)
    assert door.check("high", now=10.1) is None
    assert door.check("mid", now=10.1).retry_after_s == 12
    assert door.check("low", now=10.2).class_name == "mid"
    assert not door.needs_query(10.2)  # within the hold: nothing to ask yet
    assert door.take_refusal_counts() == {"mid": 1, "low": 1}
    assert door.take_refusal_counts() == {}


def full(retry_after_s: int, room: int = 0) -> AdmissionPreview:
    return AdmissionPreview(room, f"predicted wait {retry_after_s}s", retry_after_s)


def test_after_the_hold_requests_are_still_refused_while_the_router_is_asked_once():
    door = AdmissionDoor(classes(), hold_s=0.5)
    door.router_refused("mid", "predicted wait 12s", retry_after_s=12, now=10.0)
    assert door.check("mid", now=10.6) is not None
    assert door.needs_query(10.6)
    assert door.check("mid", now=10.7) is not None
    assert not door.needs_query(10.7)  # one question at a time
    door.query_answered({"high": None, "mid": full(11), "low": full(40)}, 10.8)
    assert door.check("mid", now=11.0).retry_after_s == 11  # still refused: closed another hold
    assert door.check("low", now=11.0).retry_after_s == 11  # "mid" closes it too
    assert door.check("mid", now=11.4) is not None and door.needs_query(11.4)
    door.query_answered({"high": None, "mid": None, "low": None}, 11.5)
    assert door.check("mid", now=11.5) is None and door.check("low", now=11.5) is None


def test_the_room_the_router_reports_passes_the_door_and_no_more():
    door = AdmissionDoor(classes(), hold_s=0.5)
    door.router_refused("mid", "full", retry_after_s=5, now=0.0)
    assert door.check("mid", now=0.6) is not None and door.needs_query(0.6)
    door.query_answered({"high": None, "mid": full(5, room=2), "low": full(9)}, 0.7)
    assert door.check("mid", now=0.8) is None and door.check("mid", now=0.8) is None
    assert door.check("mid", now=0.8).retry_after_s == 5
    assert door.take_refusal_counts() == {"mid": 2}  # the one at 0.6 and the one past the room


def test_an_unanswered_question_opens_the_door_after_another_hold():
    door = AdmissionDoor(classes(), hold_s=0.5)
    door.router_refused("low", "full", retry_after_s=3, now=0.0)
    assert door.check("low", now=0.5) is not None and door.needs_query(0.5)
    assert door.check("low", now=0.9) is not None
    assert door.check("low", now=1.0) is None  # the router never answered


def test_an_admission_reopens_that_class_and_the_ones_above_but_not_below():
    door = AdmissionDoor(classes(), hold_s=5.0)
    door.router_refused("low", "full", retry_after_s=30, now=0.0)
    door.router_refused("mid", "full", retry_after_s=10, now=0.0)
    door.router_admitted("mid")
    assert door.check("mid", now=0.1) is None
    assert door.check("low", now=0.1).class_name == "low"


def test_hold_must_be_positive():
    with pytest.raises(ValueError, match="hold_s"):
        AdmissionDoor(classes(), hold_s=0)


def test_a_refusal_decided_on_the_callers_ceiling_is_counted_under_the_class_it_would_have_had():
    door = AdmissionDoor(classes(), hold_s=0.5)
    door.router_refused("mid", "full", retry_after_s=4, now=0.0)
    assert door.check("mid", now=0.1, count_as="low") is not None
    assert door.take_refusal_counts() == {"low": 1}
