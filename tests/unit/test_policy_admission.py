import math

import pytest

from serve_app.policy.admission import AdmissionController, AdmissionDecision
from serve_app.policy.priority_classes import PriorityClass, PriorityClasses, UnknownPriorityClass
from serve_app.policy.rate_limit import RateLimiter


def make_classes() -> PriorityClasses:
    return PriorityClasses(
        [
            PriorityClass("high", 0, ttft_slo_s=0.5, tpot_slo_s=0.05, queue_deadline_s=2.0),
            PriorityClass("low", 1, ttft_slo_s=10.0, tpot_slo_s=0.2, queue_deadline_s=30.0),
        ]
    )


def make_controller(rate_rps: float = 4.0, **kwargs) -> AdmissionController:
    return AdmissionController(make_classes(), initial_service_rate_rps=rate_rps, **kwargs)


# --- AdmissionController -------------------------------------------------------------


def test_free_slot_admits_immediately():
    decision = make_controller().decide("high", queued_ahead=0, free_slots=1, now=0.0)
    assert decision == AdmissionDecision(True, 0.0, 1, "free_slot")


def test_free_slots_already_claimed_by_queue_do_not_count_as_free():
    controller = make_controller(rate_rps=4.0)
    # 3 queued ahead take the 2 free slots and one completion; this request needs 2 completions.
    decision = controller.decide("high", queued_ahead=3, free_slots=2, now=0.0)
    assert decision.admitted
    assert decision.reason == "predicted_wait_within_deadline"
    assert decision.predicted_wait_s == pytest.approx(0.5)


def test_prior_rate_predicts_wait_and_admits_within_deadline():
    controller = make_controller(rate_rps=4.0)
    # 7 ahead + itself = 8 completions at 4 rps = 2.0 s == high's deadline.
    decision = controller.decide("high", queued_ahead=7, free_slots=0, now=0.0)
    assert decision == AdmissionDecision(True, 2.0, 2, "predicted_wait_within_deadline")


def test_rejects_when_predicted_wait_exceeds_deadline_with_retry_after():
    controller = make_controller(rate_rps=4.0)
    decision = controller.decide("high", queued_ahead=9, free_slots=0, now=0.0)
    assert not decision.admitted
    assert decision.predicted_wait_s == pytest.approx(2.5)
    assert decision.retry_after_s == 3
    assert decision.reason == "predicted wait 2.50s exceeds 'high' queue deadline 2.00s"


def test_same_backlog_is_fine_for_a_class_with_a_longer_deadline():
    controller = make_controller(rate_rps=4.0)
    assert not controller.decide("high", queued_ahead=9, free_slots=0, now=0.0).admitted
    assert controller.decide("low", queued_ahead=9, free_slots=0, now=0.0).admitted
    assert not controller.decide("low", queued_ahead=120, free_slots=0, now=0.0).admitted


def test_retry_after_is_at_least_one_and_not_inflated_by_float_noise():
    controller = make_controller(rate_rps=3.0)
    # 6 completions / 3 rps is 2.0 s up to float error; must not round to 3.
    assert controller.decide("low", queued_ahead=5, free_slots=0, now=0.0).retry_after_s == 2
    fast = make_controller(rate_rps=100.0)
    assert fast.decide("high", queued_ahead=0, free_slots=0, now=0.0).retry_after_s == 1


def test_unknown_class_raises():
    with pytest.raises(UnknownPriorityClass):
        make_controller().decide("vip", queued_ahead=0, free_slots=0, now=0.0)


def test_negative_queued_ahead_rejected():
    with pytest.raises(ValueError):
        make_controller().decide("high", queued_ahead=-1, free_slots=0, now=0.0)


def test_before_any_busy_time_the_rate_is_the_prior():
    controller = make_controller(rate_rps=4.0)
    controller.record_completion(100.0)  # nothing was running: no busy time to divide by
    assert controller.service_rate_rps == pytest.approx((1 + 4.0 * 2.0) / 2.0)


def test_rate_is_completions_per_busy_second_blended_with_the_prior():
    controller = make_controller(rate_rps=4.0, prior_s=2.0)
    controller.set_busy(0.0, True)
    for i in range(1, 21):
        controller.record_completion(float(i))  # one per busy second for 20 s
    assert controller.service_rate_rps == pytest.approx((20 + 4.0 * 2.0) / (20 + 2.0))
    decision = controller.decide("high", queued_ahead=2, free_slots=0, now=20.0)
    assert decision.predicted_wait_s == pytest.approx(3 / controller.service_rate_rps)
    assert not decision.admitted


def test_a_wave_of_simultaneous_completions_counts_at_its_true_rate():
    """An engine finishes a whole wave in one step: 232 requests served in 4 s is 58/s, not the
    thousands an average of gaps between completions (mostly zero) would make of it."""
    controller = make_controller(rate_rps=1.0, prior_s=2.0)
    for wave in range(5):
        start = wave * 4.0
        controller.set_busy(start, True)
        for _ in range(232):
            controller.record_completion(start + 4.0)
    assert controller.service_rate_rps == pytest.approx(58.0, rel=0.1)


def test_idle_time_does_not_lower_the_rate():
    controller = make_controller(rate_rps=1.0, prior_s=2.0)
    controller.set_busy(0.0, True)
    for i in range(1, 11):
        controller.record_completion(i * 0.5)  # 2/s while busy
    controller.set_busy(5.0, False)
    before = controller.service_rate_rps
    controller.set_busy(3600.0, True)  # an hour idle
    assert controller.service_rate_rps == pytest.approx(before)


def test_only_the_last_window_of_busy_time_counts():
    controller = make_controller(rate_rps=1.0, window_s=10.0, prior_s=0.01)
    controller.set_busy(0.0, True)
    for i in range(1, 31):
        controller.record_completion(float(i))  # 1/s for 30 s
    for i in range(1, 61):
        controller.record_completion(30.0 + i / 6)  # then 6/s for 10 s
    assert controller.service_rate_rps == pytest.approx(6.0, rel=0.15)


def test_clock_going_backwards_adds_no_busy_time():
    controller = make_controller(rate_rps=2.0, prior_s=2.0)
    controller.set_busy(10.0, True)
    controller.record_completion(9.0)
    assert controller.service_rate_rps == pytest.approx((1 + 2.0 * 2.0) / 2.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_service_rate_rps": 0.0},
        {"initial_service_rate_rps": 1.0, "window_s": 0.0},
        {"initial_service_rate_rps": 1.0, "prior_s": 0.0},
    ],
)
def test_invalid_controller_config(kwargs):
    with pytest.raises(ValueError):
        AdmissionController(make_classes(), **kwargs)


# --- RateLimiter ---------------------------------------------------------------------


def test_new_key_may_burst_then_is_limited():
    limiter = RateLimiter(rate_per_s=2.0, burst=3)
    assert [limiter.try_acquire("k", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.try_acquire("k", 0.0) == pytest.approx(0.5)
    # A refused call takes nothing, so asking again later waits less, not more.
    assert limiter.try_acquire("k", 0.25) == pytest.approx(0.25)
    assert limiter.try_acquire("k", 0.5) == 0.0
    assert limiter.try_acquire("k", 0.5) == pytest.approx(0.5)


def test_keys_are_independent():
    limiter = RateLimiter(rate_per_s=1.0, burst=1)
    assert limiter.try_acquire("a", 0.0) == 0.0
    assert limiter.try_acquire("a", 0.0) == pytest.approx(1.0)
    assert limiter.try_acquire("b", 0.0) == 0.0


def test_refill_is_capped_at_burst():
    limiter = RateLimiter(rate_per_s=1.0, burst=2)
    limiter.try_acquire("k", 0.0)
    results = [limiter.try_acquire("k", 1000.0) for _ in range(3)]
    assert results[:2] == [0.0, 0.0]
    assert results[2] == pytest.approx(1.0)


def test_steady_rate_allows_exactly_rate_per_second():
    limiter = RateLimiter(rate_per_s=5.0, burst=1)
    allowed = sum(limiter.try_acquire("k", i * 0.01) == 0.0 for i in range(1000))  # 10 s
    assert allowed == 50


def test_cost_above_one():
    limiter = RateLimiter(rate_per_s=1.0, burst=4)
    assert limiter.try_acquire("k", 0.0, cost=3) == 0.0
    assert limiter.try_acquire("k", 0.0, cost=3) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        limiter.try_acquire("k", 0.0, cost=5)
    with pytest.raises(ValueError):
        limiter.try_acquire("k", 0.0, cost=0)


def test_clock_going_backwards_neither_refills_nor_drains():
    limiter = RateLimiter(rate_per_s=1.0, burst=1)
    limiter.try_acquire("k", 10.0)
    assert limiter.try_acquire("k", 5.0) == pytest.approx(1.0)
    assert limiter.try_acquire("k", 10.5) == pytest.approx(0.5)
    assert limiter.try_acquire("k", 11.0) == 0.0


def test_prune_drops_only_fully_refilled_keys():
    limiter = RateLimiter(rate_per_s=1.0, burst=2)
    limiter.try_acquire("old", 0.0)
    limiter.try_acquire("recent", 9.5)
    assert len(limiter) == 2
    assert limiter.prune(10.0) == 1
    assert len(limiter) == 1
    assert limiter.try_acquire("recent", 10.0) == 0.0
    assert limiter.try_acquire("recent", 10.0) == pytest.approx(0.5)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0.5)])
def test_invalid_limiter_config(rate, burst):
    with pytest.raises(ValueError):
        RateLimiter(rate_per_s=rate, burst=burst)


def test_wait_hint_is_exact_enough_for_retry_after():
    limiter = RateLimiter(rate_per_s=3.0, burst=1)
    limiter.try_acquire("k", 0.0)
    wait_s = limiter.try_acquire("k", 0.0)
    assert math.isclose(wait_s, 1 / 3)
    assert limiter.try_acquire("k", wait_s) == 0.0


def test_room_is_how_many_more_decide_would_admit_one_after_another():
    controller = make_controller(rate_rps=4.0)
    for queued_ahead, free_slots in [(0, 0), (3, 1), (7, 0), (12, 2), (20, 0)]:
        room = controller.room("high", queued_ahead, free_slots)
        admitted = 0
        while controller.decide("high", queued_ahead + admitted, free_slots, now=0.0).admitted:
            admitted += 1
        assert room == admitted, (queued_ahead, free_slots)


def test_no_room_limit_while_warming_up():
    assert make_controller(rate_rps=4.0, warmup_completions=3).room("high", 100, 0) is None
