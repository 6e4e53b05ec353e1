"""RouterCore: rate limit, admission, global priority queue, windows and replica choice, on a fake clock."""
from __future__ import annotations

import random

import pytest

from serve_app.policy.api_keys import Caller
from serve_app.policy.priority_classes import PriorityClass, PriorityClasses
from serve_app.policy.router_core import Dispatch, RouterCore, RouterPolicy

CLASSES = PriorityClasses([
    PriorityClass("interactive", 0, ttft_slo_s=0.5, tpot_slo_s=0.1, queue_deadline_s=2.0),
    PriorityClass("batch", 1, ttft_slo_s=30.0, tpot_slo_s=1.0, queue_deadline_s=10.0),
])
ANYONE = Caller("anyone", "interactive")


def make_core(**policy) -> RouterCore:
    """A core whose window halves on a slow batch (beta 0.5): the cuts' arithmetic below is written for it."""
    defaults = {"initial_window": 2, "aging_interval_s": None, "initial_service_rate_rps": 1.0,
                "headroom_fraction": 0.1, "admission_warmup_completions": 0}
    tuning = {"slow_start": False, "beta": 0.5, **policy.pop("window_tuning", {})}
    return RouterCore(CLASSES, RouterPolicy(**{**defaults, **policy, "window_tuning": tuning}), random.Random(0))


def admit(core: RouterCore, request_id: str, class_name: str, now: float, caller: Caller = ANYONE, cost: int = 10):
    return core.admit(request_id, class_name, caller, cost, now)


def test_requests_queue_until_a_replica_is_known_then_dispatch_in_priority_order():
    core = make_core()
    assert admit(core, "b1", "batch", 0.0) is None
    assert admit(core, "i1", "interactive", 0.1) is None
    assert core.take_dispatches(0.2) == []
    core.set_replicas({"r1": 100})
    # Window 2 plus one reserved slot for the top class: interactive first, then batch FIFO.
    assert [d.request_id for d in core.take_dispatches(0.3)] == ["i1", "b1"]


def dispatch_one_at_a_time(core: RouterCore, times: list[float]) -> list[str]:
    order = []
    for now in times:
        dispatched = core.take_dispatches(now)
        assert len(dispatched) == 1
        order.append(dispatched[0].request_id)
        core.finish(dispatched[0].request_id, now + 0.01, ok=True)
    return order


def test_fifo_within_a_class_and_strict_priority_between_classes():
    core = make_core(initial_window=1, headroom_fraction=0.0, newest_first_after=None)
    core.set_replicas({"r1": 10})
    for i, (rid, cls) in enumerate([("b1", "batch"), ("b2", "batch"), ("i1", "interactive"), ("i2", "interactive")]):
        assert admit(core, rid, cls, float(i) * 0.01) is None
    assert dispatch_one_at_a_time(core, [1.0, 2.0, 3.0, 4.0]) == ["i1", "i2", "b1", "b2"]


def test_a_class_turns_newest_first_once_its_oldest_is_past_its_ttft_target():
    core = make_core(initial_window=1, headroom_fraction=0.0, initial_service_rate_rps=10.0)
    core.set_replicas({"r1": 10})
    for i in range(4):
        assert admit(core, f"i{i}", "interactive", float(i) * 0.1) is None
    # At 0.45 s the oldest waited 0.45 s of its 0.5 s target: oldest first. At 1.0 s i1 waited 0.9 s and can
    # no longer make it; i3 (0.7 s) cannot either but is the best bet left, then i2 and i1.
    assert dispatch_one_at_a_time(core, [0.45, 1.0, 1.01, 1.02]) == ["i0", "i3", "i2", "i1"]
    # The batch class's 30 s target is far: its order stays oldest first.
    for i in range(3):
        admit(core, f"b{i}", "batch", 2.0 + i)
    assert dispatch_one_at_a_time(core, [10.0, 10.1, 10.2]) == ["b0", "b1", "b2"]


def test_top_class_starts_in_reserved_headroom_when_windows_are_full():
    core = make_core(initial_window=2)
    core.set_replicas({"r1": 10})
    for i in range(3):
        admit(core, f"b{i}", "batch", 0.0)
    assert len(core.take_dispatches(0.0)) == 2  # the window
    admit(core, "i1", "interactive", 0.1)
    # b2 heads the batch FIFO and cannot fit; i1 uses the top class's headroom slot at once.
    assert [d.request_id for d in core.take_dispatches(0.1)] == ["i1"]
    assert core.stats()["replicas"]["r1"]["in_flight"] == 3


def test_predicted_wait_beyond_deadline_is_refused_with_retry_after():
    core = make_core(initial_window=1, headroom_fraction=0.0, initial_service_rate_rps=1.0)
    core.set_replicas({"r1": 10})
    outcomes = [admit(core, f"b{i}", "batch", 0.0) for i in range(20)]
    core.take_dispatches(0.0)
    admitted = [o for o in outcomes if o is None]
    refused = [o for o in outcomes if o is not None]
    # 1 free slot, then 1 completion/s: a request needing more than 10 completions waits past 10 s.
    assert len(admitted) == 11
    assert all(r.status == 429 and r.code == "overloaded" for r in refused)
    assert refused[0].retry_after_s == 11
    stats = core.stats()["classes"]["batch"]
    assert stats["admitted"] == 11 and stats["refused_overload"] == 9


def test_a_full_lower_class_does_not_block_admission_of_a_higher_one():
    core = make_core(initial_window=1, headroom_fraction=0.0)
    core.set_replicas({"r1": 10})
    for i in range(12):
        admit(core, f"b{i}", "batch", 0.0)
    core.take_dispatches(0.0)
    assert admit(core, "b-late", "batch", 0.0) is not None
    # Only same-or-higher queued requests are ahead of an interactive one.
    assert admit(core, "i1", "interactive", 0.0) is None


def test_queued_past_deadline_expires_with_503():
    core = make_core(initial_window=1, headroom_fraction=0.0, initial_service_rate_rps=100.0)
    core.set_replicas({"r1": 10})
    admit(core, "b0", "batch", 0.0)
    admit(core, "b1", "batch", 0.0)
    core.take_dispatches(0.0)
    assert core.expire(9.9) == []
    [(request_id, refusal)] = core.expire(10.5)
    assert request_id == "b1"
    assert refusal.status == 503 and refusal.code == "queue_deadline_exceeded"
    assert refusal.retry_after_s >= 1
    stats = core.stats()["classes"]["batch"]
    assert stats["expired"] == 1 and stats["refused_wait_max_s"] == pytest.approx(10.5)


def test_rate_limit_is_per_caller_and_says_when_to_retry():
    core = make_core(initial_window=100)
    core.set_replicas({"r1": 1000})
    slow = Caller("slow", "batch", rate_limit_rps=0.5, burst=2)
    assert admit(core, "a", "batch", 0.0, slow) is None
    assert admit(core, "b", "batch", 0.0, slow) is None
    refusal = admit(core, "c", "batch", 0.0, slow)
    assert refusal.status == 429 and refusal.code == "rate_limit_exceeded" and refusal.retry_after_s == 2
    assert admit(core, "d", "batch", 0.0, ANYONE) is None  # another caller is not affected
    assert admit(core, "e", "batch", 2.0, slow) is None  # one token refilled after 2 s
    assert core.stats()["classes"]["batch"]["refused_rate_limit"] == 1


def test_cancel_while_queued_and_while_running_frees_everything():
    core = make_core(initial_window=1, headroom_fraction=0.0)
    core.set_replicas({"r1": 10})
    admit(core, "a", "batch", 0.0)
    admit(core, "b", "batch", 0.0)
    [dispatch] = core.take_dispatches(0.0)
    core.cancel("b")  # queued
    core.cancel(dispatch.request_id)  # running
    stats = core.stats()
    assert stats["queue_depth"] == 0 and stats["running"] == 0
    assert stats["replicas"]["r1"]["in_flight"] == 0
    assert stats["classes"]["batch"]["cancelled"] == 2


def test_windows_grow_on_target_and_shrink_over_target_within_the_cap():
    core = make_core(initial_window=2, headroom_fraction=0.0, window_tuning={"slow_start": True, "cooldown_s": 0})
    core.set_replicas({"r1": 6})
    for i in range(10):
        admit(core, f"b{i}", "batch", float(i))
        for d in core.take_dispatches(float(i)):
            core.finish(d.request_id, float(i) + 0.5, ok=True, ttft_s=0.1, tpot_s=0.05)
    assert core.stats()["replicas"]["r1"]["window"] == 6  # grew, capped by the controller's cap
    admit(core, "slow", "batch", 20.0)
    [d] = core.take_dispatches(20.0)
    core.finish(d.request_id, 80.0, ok=True, ttft_s=60.0, tpot_s=5.0)  # far over batch's SLO
    assert core.stats()["replicas"]["r1"]["window"] == 3


def test_a_burst_that_was_dispatched_together_cuts_the_window_once():
    core = make_core(initial_window=64, headroom_fraction=0.0, window_tuning={"slow_start": False, "cooldown_s": 0})
    core.set_replicas({"r1": 64})
    for i in range(64):
        admit(core, f"b{i}", "batch", 0.0)
    burst = core.take_dispatches(0.0)
    assert len(burst) == 64
    for k, d in enumerate(burst):  # all far over the SLO, ending one by one long after the first cut
        core.finish(d.request_id, 40.0 + k, ok=True, ttft_s=35.0, tpot_s=0.05)
    assert core.stats()["replicas"]["r1"]["window"] == 57  # one TTFT trim: 64 x 0.9
    admit(core, "late", "batch", 200.0)
    [d] = core.take_dispatches(200.0)
    core.finish(d.request_id, 240.0, ok=True, ttft_s=35.0, tpot_s=0.05)  # dispatched after the cut: counts
    assert core.stats()["replicas"]["r1"]["window"] == 51  # 57.6 x 0.9


@pytest.mark.parametrize("share, started_on_ten_completions, in_flight_after", [
    (0.0, 1, 10),  # nothing starts until in flight is under the window, then the 10th completion's slot
    (0.5, 5, 14),  # every other completion starts one: in flight drains at half the rate
    (1.0, 10, 19),  # every completion starts one: in flight holds
])
def test_a_cut_window_drains_with_a_share_of_completions_still_starting_queued_requests(
        share, started_on_ten_completions, in_flight_after):
    core = make_core(initial_window=20, headroom_fraction=0.0, drain_dispatch_share=share,
                     window_tuning={"slow_start": False, "cooldown_s": 1000, "ewma_alpha": 1.0})
    core.set_replicas({"r1": 20})
    for i in range(40):
        admit(core, f"b{i}", "batch", 0.0)
    running = [d.request_id for d in core.take_dispatches(0.0)]
    core.finish(running.pop(0), 1.0, ok=True, ttft_s=1.0, tpot_s=2.0)  # 2x batch's TPOT: the window halves
    assert core.stats()["replicas"]["r1"]["window"] == 10
    started = 0
    for k in range(10):  # 19 in flight over a window of 10: draining
        core.finish(running.pop(0), 2.0 + k, ok=True, ttft_s=1.0, tpot_s=0.5)  # dispatched before the cut
        new = core.take_dispatches(2.0 + k)
        started += len(new)
        running += [d.request_id for d in new]
    assert started == started_on_ten_completions
    assert core.stats()["replicas"]["r1"]["in_flight"] == in_flight_after


def test_window_grows_by_one_per_on_target_completion_while_requests_wait_at_the_router():
    def window_after_eight_on_target_completions(queued_behind: int) -> int:
        core = make_core(initial_window=4, headroom_fraction=0.0,
                         window_tuning={"slow_start": False, "increase_every": 8})
        core.set_replicas({"r1": 100})
        for i in range(4 + queued_behind):
            admit(core, f"b{i}", "batch", 0.0)
        running = [d.request_id for d in core.take_dispatches(0.0)]
        for k in range(8):
            admit(core, f"n{k}", "batch", 1.0 + k)
            running += [d.request_id for d in core.take_dispatches(1.0 + k)]
            core.finish(running.pop(0), 1.5 + k, ok=True, ttft_s=1.0, tpot_s=0.1)  # within batch's 30 s / 1 s
        return core.stats()["replicas"]["r1"]["window"]

    assert window_after_eight_on_target_completions(queued_behind=0) == 5  # +1 per 8
    assert window_after_eight_on_target_completions(queued_behind=100) == 12  # +1 each


def test_window_follows_the_tightest_active_class():
    core = make_core(initial_window=4, headroom_fraction=0.0, window_tuning={"slow_start": False, "cooldown_s": 0})
    core.set_replicas({"r1": 10})
    admit(core, "i1", "interactive", 0.0)
    admit(core, "b1", "batch", 0.0)
    dispatched = {d.request_id for d in core.take_dispatches(0.0)}
    assert dispatched == {"i1", "b1"}
    # 2 s TTFT meets batch's 30 s target but not interactive's 0.5 s, which is still running.
    core.finish("b1", 3.0, ok=True, ttft_s=2.0, tpot_s=0.05)
    assert core.stats()["replicas"]["r1"]["window"] == 3  # trimmed (4 x 0.9): a wait to start, not a slow batch


def test_failed_replica_gets_nothing_more_and_its_requests_still_finish():
    core = make_core(initial_window=4)
    core.set_replicas({"r1": 10, "r2": 10})
    for i in range(4):
        admit(core, f"b{i}", "batch", 0.0)
    dispatches = core.take_dispatches(0.0)
    lost = dispatches[0].replica_id
    core.replica_failed(lost)
    for d in dispatches:
        core.finish(d.request_id, 1.0, ok=d.replica_id != lost)
    for i in range(4, 8):
        admit(core, f"b{i}", "batch", 2.0)
    assert {d.replica_id for d in core.take_dispatches(2.0)} == {"r1", "r2"} - {lost}
    counts = core.stats()["classes"]["batch"]
    assert counts["served"] + counts["failed"] == 4 and counts["failed"] >= 1


def test_a_dead_replica_stays_out_while_the_controller_still_lists_it():
    core = make_core(initial_window=4)
    core.set_replicas({"r1": 10, "r2": 10})
    core.replica_failed("r1")
    core.set_replicas({"r1": 10, "r2": 10})  # the controller has not noticed yet
    assert set(core.stats()["replicas"]) == {"r2"}
    for i in range(3):
        admit(core, f"b{i}", "batch", 0.0)
    assert {d.replica_id for d in core.take_dispatches(0.0)} == {"r2"}
    core.set_replicas({"r2": 10, "r3": 10})  # dropped by the controller; a replacement came up
    core.set_replicas({"r1": 10, "r2": 10, "r3": 10})  # an id is never reused, but if it were: forgotten
    assert set(core.stats()["replicas"]) == {"r1", "r2", "r3"}


@pytest.mark.parametrize("bound_share", [0.0, 0.3])
def test_every_admitted_request_ends_exactly_once(bound_share):
    """`bound_share`: requests bound to one replica (`admit`'s replica_id), set aside while it is full."""
    rng = random.Random(7)
    core = make_core(initial_window=3, initial_service_rate_rps=2.0)
    core.set_replicas({"r1": 8, "r2": 8})
    running: set[str] = set()
    outcomes: dict[str, str] = {}
    bound: dict[str, str] = {}
    bound_dispatched = False
    for step in range(400):
        now = step * 0.05
        if rng.random() < 0.6:
            rid = f"q{step}"
            bound_to = rng.choice(["r1", "r2"]) if rng.random() < bound_share else None
            refusal = core.admit(rid, rng.choice(["interactive", "batch"]), ANYONE, 10, now, replica_id=bound_to)
            outcomes[rid] = "refused" if refusal else "queued"
            if bound_to:
                bound[rid] = bound_to
        for rid, _ in core.expire(now):
            outcomes[rid] = "expired"
        for d in core.take_dispatches(now):
            running.add(d.request_id)
            outcomes[d.request_id] = "running"
            assert bound.get(d.request_id, d.replica_id) == d.replica_id
            bound_dispatched |= d.request_id in bound
        for rid in [r for r in running if rng.random() < 0.2]:
            running.discard(rid)
            core.finish(rid, now, ok=True, ttft_s=0.05, tpot_s=0.01)
            outcomes[rid] = "served"
    stats = core.stats()
    counts = stats["classes"]
    queued_left = sum(1 for o in outcomes.values() if o == "queued")
    waiting = stats["queue_depth"] + stats["waiting_for_their_replica"]
    assert queued_left == waiting
    assert bound_dispatched == (bound_share > 0)
    assert sum(1 for o in outcomes.values() if o == "running") == stats["running"]
    total = sum(c["admitted"] + c["refused_overload"] for c in counts.values())
    assert total == len(outcomes)
    ended = sum(c["served"] + c["expired"] for c in counts.values())
    assert ended + waiting + stats["running"] == sum(c["admitted"] for c in counts.values())


def test_without_an_initial_window_a_replica_starts_at_its_cap_less_the_headroom():
    core = make_core(initial_window=None, headroom_fraction=0.1)
    core.set_replicas({"r1": 256})
    replica = core.stats()["replicas"]["r1"]
    assert replica["window"] == replica["window_cap"] == 232  # 232 + ceil(23.2) = 256
    assert replica["controller_cap"] == 256


def test_admission_admits_a_cold_burst_until_it_has_measured_completions():
    core = make_core(initial_window=1, headroom_fraction=0.0, admission_warmup_completions=3)
    core.set_replicas({"r1": 10})
    assert all(admit(core, f"cold{i}", "batch", 0.0) is None for i in range(30))
    for step in range(3):
        [d] = core.take_dispatches(float(step))
        core.finish(d.request_id, float(step) + 1.0, ok=True)
    # Measured: about one completion per second, 27 queued ahead: far past batch's 10 s deadline.
    refusal = admit(core, "warm", "batch", 3.0)
    assert refusal is not None and refusal.code == "overloaded"


def test_top_class_starts_at_once_right_after_a_window_cut():
    core = make_core(initial_window=10, headroom_fraction=0.1, window_tuning={"slow_start": False, "cooldown_s": 0})
    core.set_replicas({"r1": 20})
    for i in range(11):
        admit(core, f"b{i}", "batch", 0.0)
    dispatched = [d.request_id for d in core.take_dispatches(0.0)]
    assert len(dispatched) == 10
    core.finish(dispatched[0], 5.0, ok=True, ttft_s=100.0, tpot_s=10.0)  # far over target: window 10 -> 5
    assert core.stats()["replicas"]["r1"]["window"] == 5
    admit(core, "i1", "interactive", 5.1)
    # 9 batch requests still run above the new window; the queued batch one waits, interactive starts.
    assert [d.request_id for d in core.take_dispatches(5.1)] == ["i1"]
    admit(core, "i2", "interactive", 5.2)
    assert core.take_dispatches(5.2) == []  # its own budget (1 slot at window 5) is in use


def test_full_queue_sheds_the_newest_lowest_class_request_for_a_higher_class():
    core = make_core(max_queue_size=3, initial_window=3)
    for i in range(3):
        assert admit(core, f"b{i}", "batch", 0.1 * i) is None  # no replica yet: all stay queued
    assert admit(core, "i1", "interactive", 1.0) is None
    shed = core.expire(1.0)
    assert [request_id for request_id, _ in shed] == ["b2"]
    refusal = shed[0][1]
    assert (refusal.status, refusal.code) == (503, "shed_for_higher_priority") and refusal.retry_after_s >= 1
    assert core.expire(1.0) == []  # answered once
    stats = core.stats()["classes"]
    assert stats["batch"]["shed"] == 1 and stats["interactive"]["admitted"] == 1
    core.set_replicas({"r1": 100})
    assert {d.request_id for d in core.take_dispatches(1.1)} == {"i1", "b0", "b1"}


def test_full_queue_of_the_same_or_higher_class_still_refuses_with_429():
    core = make_core(max_queue_size=2)
    assert admit(core, "i1", "interactive", 0.0) is None
    assert admit(core, "b1", "batch", 0.1) is None
    refusal = admit(core, "b2", "batch", 0.2)  # nothing below batch to shed
    assert (refusal.status, refusal.code) == (429, "queue_full")
    assert admit(core, "i2", "interactive", 0.3) is None  # sheds b1
    assert admit(core, "i3", "interactive", 0.4).status == 429  # never sheds its own class or higher
    assert [request_id for request_id, _ in core.expire(0.5)] == ["b1"]


def test_stats_with_now_report_recent_replica_ttft_per_class_of_served_requests():
    core = make_core(initial_window=4)
    core.set_replicas({"r1": 10})
    for rid, cls in [("i1", "interactive"), ("b1", "batch"), ("b2", "batch")]:
        admit(core, rid, cls, 0.0)
    core.take_dispatches(0.0)
    core.finish("i1", 1.0, ok=True, ttft_s=0.05)
    core.finish("b1", 2.0, ok=True, ttft_s=0.4)
    core.finish("b2", 2.0, ok=False, ttft_s=9.0)  # failed: not a latency sample
    assert "replica_ttft_recent" not in core.stats()
    recent = core.stats(now=5.0)["replica_ttft_recent"]
    assert recent["interactive"]["n"] == 1 and recent["interactive"]["p50_s"] == 0.05
    assert recent["batch"] == {"n": 1, "p50_s": 0.4, "p99_s": 0.4, "max_s": 0.4}
    assert core.stats(now=30.0)["replica_ttft_recent"]["batch"]["n"] == 0


def test_queue_wait_percentiles_are_the_shared_definition():
    core = make_core(initial_window=4)
    admit(core, "b1", "batch", 0.0)
    admit(core, "b2", "batch", 1.0)
    core.set_replicas({"r1": 10})
    core.take_dispatches(3.0)  # waited 3 s and 2 s
    batch = core.stats()["classes"]["batch"]
    # serve_app.statistics.percentile interpolates between the two waits (nearest rank read 2.0 and 3.0).
    assert batch["queue_wait_p50_s"] == pytest.approx(2.0 + 0.5 * (3.0 - 2.0))
    assert batch["queue_wait_p99_s"] == pytest.approx(2.0 + 0.99 * (3.0 - 2.0))


def test_admission_preview_says_how_many_more_admit_would_take_without_counting_and_door_refusals_count():
    core = make_core(initial_window=1, headroom_fraction=0.0, initial_service_rate_rps=1.0)
    core.set_replicas({"r1": 10})
    for i in range(8):
        assert admit(core, f"b{i}", "batch", 0.0) is None
    preview = core.admission_preview(0.0)
    # Interactive: nothing of its class queued; the free slot, then 2 s of completions at 1/s.
    assert preview["interactive"].room == 3
    # Batch, for a caller with nothing queued: fair shares serve one of the 8 before its first request,
    # so the free slot and 10 s at 1/s leave room for 10.
    assert preview["batch"].room == 10 and "'batch'" in preview["batch"].message
    for i in range(8, 11):  # the caller that queued the 8 has 8 ahead: 3 more
        assert admit(core, f"b{i}", "batch", 0.0) is None
    refusal = admit(core, "b11", "batch", 0.0)
    assert refusal is not None and refusal.retry_after_s == preview["batch"].retry_after_s
    assert admit(core, "o1", "batch", 0.0, Caller("other", "batch")) is None
    core.record_door_refusals({"batch": 5})
    stats = core.stats()["classes"]["batch"]
    assert stats["admitted"] == 12 and stats["refused_overload"] == 1 + 5


def test_fixed_ratio_with_no_tuning_builds_a_working_core():
    """Once broken: RouterPolicy's default tuning (slow start, an aimd knob) made `fixed_ratio` raise
    TypeError when the first replica appeared, inside the router's refresh loop."""
    core = RouterCore(CLASSES, RouterPolicy(window_controller="fixed_ratio", initial_window=2,
                                            admission_warmup_completions=0), random.Random(0))
    core.set_replicas({"r1": 10})
    assert admit(core, "i1", "interactive", 0.0) is None
    assert core.take_dispatches(0.0) == [Dispatch("i1", "r1")]
    core.finish("i1", 0.2, ok=True, ttft_s=0.1, tpot_s=0.01)
    assert core.stats()["replicas"]["r1"]["window"] == 3  # x1.5 on target


def test_queued_and_running_counts_per_class_follow_every_way_a_request_starts_and_ends():
    # The core counts running requests per class as they start and end (the window targets read the
    # counts); here they are checked against the test's own ledger after every step.
    rng = random.Random(11)
    core = make_core(initial_window=3, initial_service_rate_rps=4.0, max_queue_size=25)
    core.set_replicas({"r1": 8, "r2": 8, "r3": 4})
    queued: dict[str, str] = {}  # request id -> class
    running: dict[str, str] = {}
    now = 0.0
    for step in range(3000):
        now += rng.expovariate(20.0)
        action = rng.random()
        if action < 0.45:
            rid, cls = f"q{step}", rng.choice(CLASSES.names)
            if admit(core, rid, cls, now, cost=rng.randint(1, 500)) is None:
                queued[rid] = cls
        elif action < 0.7 and running:
            rid = rng.choice(sorted(running))
            del running[rid]
            core.finish(rid, now, ok=rng.random() < 0.9, ttft_s=rng.uniform(0.01, 2.0), tpot_s=rng.uniform(0.01, 0.3))
        elif action < 0.8 and (queued or running):
            rid = rng.choice(sorted(queued) + sorted(running))
            queued.pop(rid, None) or running.pop(rid)
            core.cancel(rid, now if rng.random() < 0.5 else None)
        elif action < 0.85:
            core.replica_failed(rng.choice(["r1", "r2", "r3"]))
        elif action < 0.9:
            core.set_replicas({rid: rng.randint(1, 12) for rid in ("r1", "r2", "r3", f"r{step}") if rng.random() < 0.7})
        for rid, _ in core.expire(now, ahead_s=rng.choice([0.0, 0.05])):  # deadlines and shed requests
            del queued[rid]
        for dispatch in core.take_dispatches(now):
            running[dispatch.request_id] = queued.pop(dispatch.request_id)
        classes = core.stats()["classes"]
        for name in CLASSES.names:
            assert classes[name]["queued"] == sum(1 for c in queued.values() if c == name), step
            assert classes[name]["running"] == sum(1 for c in running.values() if c == name), step
    assert core.running_count == len(running)
    assert all(classes[name]["cancelled"] and classes[name]["served"] and classes[name]["expired"]
               for name in CLASSES.names)  # the sequence took every path


def test_window_stops_following_a_class_whose_last_request_was_cancelled():
    core = make_core(initial_window=4, headroom_fraction=0.0, window_tuning={"cooldown_s": 0, "slow_start": False})
    core.set_replicas({"r1": 10})
    for rid, cls in [("i1", "interactive"), ("b1", "batch"), ("b2", "batch")]:
        admit(core, rid, cls, 0.0)
    assert {d.request_id for d in core.take_dispatches(0.0)} == {"i1", "b1", "b2"}
    core.cancel("i1", 1.0)  # interactive's client left: only batch's 30 s TTFT target applies now
    core.finish("b1", 3.0, ok=True, ttft_s=2.0, tpot_s=0.05)  # meets batch's 30 s target
    assert core.stats()["replicas"]["r1"]["window"] == 4


def test_a_request_bound_to_a_full_replica_waits_for_it_without_holding_back_the_queue():
    core = make_core(initial_window=1, headroom_fraction=0.0)
    core.set_replicas({"r1": 10, "r2": 10})
    admit(core, "on_r1", "batch", 0.0)
    admit(core, "on_r2", "batch", 0.0)
    assert {d.replica_id for d in core.take_dispatches(0.0)} == {"r1", "r2"}
    assert core.admit("follow_up", "batch", ANYONE, 10, 0.1, replica_id="r1") is None  # r1 holds what it continues
    admit(core, "free", "batch", 0.2)
    assert core.take_dispatches(0.3) == []  # both windows full
    core.finish("on_r2", 0.4, ok=True)
    # r2 has room: the request behind the bound one starts there; the bound one waits for r1.
    assert core.take_dispatches(0.5) == [Dispatch("free", "r2")]
    assert core.stats()["waiting_for_their_replica"] == 1
    core.finish("on_r1", 0.6, ok=True)
    assert core.take_dispatches(0.7) == [Dispatch("follow_up", "r1")]
    assert core.stats()["waiting_for_their_replica"] == 0


def test_a_bound_request_goes_to_its_replica_even_when_another_has_more_room():
    core = make_core(initial_window=4, headroom_fraction=0.0)
    core.set_replicas({"r1": 10, "r2": 10})
    for i in range(3):
        admit(core, f"load{i}", "batch", 0.0)
    sent_to = [d.replica_id for d in core.take_dispatches(0.0)]
    target = max(("r1", "r2"), key=sent_to.count)  # the busier one
    assert sent_to.count(target) == 2
    assert core.admit("follow_up", "batch", ANYONE, 10, 0.1, replica_id=target) is None
    assert core.take_dispatches(0.2) == [Dispatch("follow_up", target)]


def test_a_set_aside_request_expires_at_its_deadline_and_can_be_cancelled():
    core = make_core(initial_window=1, headroom_fraction=0.0, initial_service_rate_rps=100.0)
    core.set_replicas({"r1": 10, "r2": 10})
    admit(core, "a", "batch", 0.0)
    admit(core, "b", "batch", 0.0)
    running = {d.replica_id: d.request_id for d in core.take_dispatches(0.0)}
    core.admit("late", "batch", ANYONE, 10, 0.0, replica_id="r1")
    core.admit("left", "batch", ANYONE, 10, 0.0, replica_id="r1")
    assert core.take_dispatches(0.1) == []
    core.cancel("left", 0.2)
    [(request_id, refusal)] = core.expire(10.5)
    assert request_id == "late" and refusal.code == "queue_deadline_exceeded"
    stats = core.stats()
    assert stats["waiting_for_their_replica"] == 0 and stats["classes"]["batch"]["cancelled"] == 1
    assert stats["classes"]["batch"]["expired"] == 1 and sorted(running) == ["r1", "r2"]


def test_a_request_bound_to_a_replica_that_is_gone_goes_wherever_there_is_room():
    core = make_core(initial_window=1, headroom_fraction=0.0)
    core.set_replicas({"r1": 10, "r2": 10})
    admit(core, "x", "batch", 0.0)
    admit(core, "y", "batch", 0.0)
    running = {d.replica_id: d.request_id for d in core.take_dispatches(0.0)}
    core.admit("follow_up", "batch", ANYONE, 10, 0.1, replica_id="r1")
    assert core.take_dispatches(0.2) == []  # set aside for r1
    core.replica_failed("r1")
    core.finish(running["r2"], 0.3, ok=True)
    assert core.take_dispatches(0.4) == [Dispatch("follow_up", "r2")]
    assert core.admit("unknown", "batch", ANYONE, 10, 0.5, replica_id="r9") is None  # never routable: unbound
    core.finish("follow_up", 0.6, ok=True)
    assert core.take_dispatches(0.7) == [Dispatch("unknown", "r2")]
