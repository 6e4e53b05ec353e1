"""Fair shares between callers (tenants) inside one priority class (issue 17), on a fake clock."""
from __future__ import annotations

import random

from serve_app.bench.tenant_fairness import Workload, light_share
from serve_app.policy.admission_door import AdmissionDoor
from serve_app.policy.api_keys import Caller
from serve_app.policy.priority_classes import PriorityClass, PriorityClasses
from serve_app.policy.priority_queue import PriorityRequestQueue
from serve_app.policy.router_core import RouterCore, RouterPolicy

CLASSES = PriorityClasses([
    PriorityClass("high", 0, ttft_slo_s=0.5, tpot_slo_s=0.05, queue_deadline_s=5.0),
    PriorityClass("low", 1, ttft_slo_s=10.0, tpot_slo_s=0.2, queue_deadline_s=100.0),
])


def make_queue(max_size: int = 1000, aging_interval_s: float | None = None) -> PriorityRequestQueue:
    return PriorityRequestQueue(CLASSES, max_size=max_size, aging_interval_s=aging_interval_s)


def pop_tenants(queue: PriorityRequestQueue, count: int, now: float = 0.0) -> list[str]:
    return [queue.pop_next(now).tenant for _ in range(count)]


def test_a_tenant_pushing_ten_times_more_does_not_get_ahead_pops_alternate():
    queue = make_queue()
    for i in range(50):  # the heavy tenant's backlog arrives first
        queue.push(f"h{i}", "low", 0.0, 1, tenant="heavy")
    for i in range(5):
        queue.push(f"l{i}", "low", 0.0, 1, tenant="light")
    assert pop_tenants(queue, 10) == ["heavy", "light"] * 5
    assert pop_tenants(queue, 3) == ["heavy"] * 3  # the light tenant is done: the heavy one takes all


def test_weights_two_to_one_under_equal_backlog_give_exactly_two_to_one_pops():
    queue = make_queue()
    for i in range(60):
        queue.push(f"a{i}", "low", 0.0, 1, tenant="gold", weight=2.0)
        queue.push(f"b{i}", "low", 0.0, 1, tenant="bronze", weight=1.0)
    popped = pop_tenants(queue, 30)
    for window in range(0, 30, 3):  # exact over every window of three
        assert sorted(popped[window:window + 3]) == ["bronze", "gold", "gold"]


def test_an_idle_tenant_that_returns_gets_no_burst_for_its_idle_time():
    queue = make_queue()
    for i in range(40):
        queue.push(f"h{i}", "low", 0.0, 1, tenant="heavy")
    assert pop_tenants(queue, 20) == ["heavy"] * 20  # the other tenant idle meanwhile
    for i in range(10):
        queue.push(f"l{i}", "low", 1.0, 1, tenant="light")
    # Back at the class's virtual time (the last start served), not 20 requests of credit: one turn, then
    # it alternates with the heavy one.
    assert pop_tenants(queue, 6, 1.0) == ["light", "heavy"] * 3


def test_a_closed_loop_tenant_keeps_only_its_share():
    """A tenant with one request queued at a time must not jump ahead each time it comes back."""
    queue = make_queue()
    for i in range(30):
        queue.push(f"h{i}", "low", 0.0, 1, tenant="heavy")
    popped = []
    queue.push("l0", "low", 0.0, 1, tenant="light")
    for i in range(1, 11):
        entry = queue.pop_next(0.0)
        popped.append(entry.tenant)
        if entry.tenant == "light":
            queue.push(f"l{i}", "low", 0.0, 1, tenant="light")
    assert popped == ["heavy", "light"] * 5


def test_strict_priority_between_classes_stays_whatever_the_tenants():
    queue = make_queue()
    for i in range(5):
        queue.push(f"low-{i}", "low", 0.0, 1, tenant="light")
    queue.push("high-0", "high", 1.0, 1, tenant="heavy")
    queue.push("high-1", "high", 1.0, 1, tenant="heavy")
    assert [queue.pop_next(1.0).request_id for _ in range(3)] == ["high-0", "high-1", "low-0"]


def test_aging_lifts_the_class_and_the_class_gives_up_its_fair_pick():
    queue = make_queue(aging_interval_s=2.0)
    for i in range(5):
        queue.push(f"h{i}", "low", 0.0, 1, tenant="heavy")
    queue.push("l0", "low", 1.0, 1, tenant="light")
    queue.push("high-0", "high", 1.5, 1, tenant="other")
    # At 2.0 the low class's oldest (0.0) has aged to level 0 and is older than high-0: the low class
    # goes first, as with one FIFO per class.
    assert queue.pop_next(2.0).request_id == "h0"
    # Its next pick is the light tenant's turn, aged or not: aging never overrides the shares.
    assert queue.pop_next(2.0).request_id == "l0"
    assert queue.pop_next(2.0).request_id == "h1"  # the class's oldest is still older than high-0


def test_expiry_per_tenant_fifo_removes_each_tenants_stale_head():
    queue = make_queue()
    queue.push("h-old", "high", 0.0, 1, tenant="heavy")
    queue.push("l-old", "high", 0.5, 1, tenant="light")
    queue.push("h-new", "high", 3.0, 1, tenant="heavy")
    queue.push("l-new", "high", 4.0, 1, tenant="light")
    assert [e.request_id for e in queue.expired(5.6)] == ["h-old", "l-old"]
    assert queue.depth_by_tenant() == {"heavy": {"high": 1}, "light": {"high": 1}}


def test_a_full_queue_sheds_the_newest_of_the_tenant_most_over_its_share():
    queue = make_queue(max_size=10)
    for i in range(7):
        queue.push(f"h{i}", "low", float(i), 1, tenant="heavy")
    for i in range(3):
        queue.push(f"l{i}", "low", 7.0 + i, 1, tenant="light")  # the newest arrivals overall
    assert queue.last_below("high", 9.0).request_id == "h6"


def test_shedding_compares_shares_by_weight():
    queue = make_queue()
    for i in range(4):
        queue.push(f"g{i}", "low", 0.0, 1, tenant="gold", weight=4.0)  # 4 queued at weight 4: 1 round
    for i in range(2):
        queue.push(f"b{i}", "low", 0.0, 1, tenant="bronze", weight=1.0)  # 2 queued at weight 1: 2 rounds
    assert queue.last_below("high", 0.0).request_id == "b1"


def test_ahead_of_counts_what_fair_shares_serve_first():
    queue = make_queue()
    queue.push("x", "high", 0.0, 1, tenant="other")
    for i in range(20):
        queue.push(f"h{i}", "low", 0.0, 1, tenant="heavy")
    queue.push("l0", "low", 0.0, 1, tenant="light")
    assert queue.ahead_of("low", "light", 1.0) == 1 + 1 + 2  # the high one, its own, 2 of the heavy one's
    assert queue.ahead_of("low", "heavy", 1.0) == 1 + 20 + 1
    assert queue.ahead_of("low", None, 1.0) == 1 + 1 + 1
    assert queue.ahead_of("low", "light", 0.5) == 1 + 1 + 4  # half the weight: twice the heavy one's turns
    assert queue.depth_at_or_above("low") == 22  # unchanged meaning


# ---- the router core ------------------------------------------------------------------------------

HEAVY, LIGHT = Caller("heavy", "high"), Caller("light", "high")


def make_core() -> RouterCore:
    policy = RouterPolicy(initial_window=1, headroom_fraction=0.0, aging_interval_s=None, initial_service_rate_rps=1.0,
                          admission_warmup_completions=0, window_tuning={"slow_start": False})
    core = RouterCore(CLASSES, policy, random.Random(0))
    core.set_replicas({"r1": 10})
    return core


def test_at_overload_the_heavy_tenant_is_refused_and_the_light_one_admitted():
    core = make_core()
    heavy = [core.admit(f"h{i}", "low", HEAVY, 10, 0.0) for i in range(150)]
    assert sum(r is None for r in heavy) == 101  # the free slot, then 100 s at 1/s
    assert all(r.code == "overloaded" for r in heavy if r is not None)
    assert [core.admit(f"l{i}", "low", LIGHT, 10, 0.0) for i in range(5)] == [None] * 5
    order = []
    for t in range(4):  # window 1: one at a time
        (dispatch,) = core.take_dispatches(float(t))
        core.finish(dispatch.request_id, t + 0.5, ok=True)
        order.append(dispatch.request_id[0])
    assert order == ["h", "l", "h", "l"]
    tenants = core.stats()["tenants"]
    assert tenants["heavy"]["low"] == {"admitted": 101, "refused_overload": 49, "served": 2, "queued": 99}
    assert tenants["light"]["low"] == {"admitted": 5, "refused_overload": 0, "served": 2, "queued": 3}


def test_the_door_stays_open_for_a_light_tenant_while_the_heavy_one_is_refused():
    core, door = make_core(), AdmissionDoor(CLASSES, hold_s=0.5)
    for i in range(110):
        refusal = core.admit(f"h{i}", "low", HEAVY, 10, 0.0)
        if refusal is not None:  # as the ingress's LocalDoor does with the router's overload refusal
            room = core.admission_preview(0.0)["low"].room
            door.router_refused("low", refusal.message, refusal.retry_after_s, 0.0, room_for_new_caller=room)
    assert core.stats()["tenants"]["heavy"]["low"]["refused_overload"] == 9
    assert door.check("low", now=0.1) is None
    assert core.admit("l0", "low", LIGHT, 10, 0.1) is None


def test_the_door_closes_once_even_a_new_caller_would_be_refused():
    core, door = make_core(), AdmissionDoor(CLASSES, hold_s=0.5)
    callers = [Caller(f"c{i}", "high") for i in range(120)]  # as many callers as the class has room for
    refusals = [r for c in callers if (r := core.admit(f"{c.name}-0", "low", c, 10, 0.0)) is not None]
    assert refusals and core.admission_preview(0.0)["low"].room == 0
    door.router_refused("low", refusals[0].message, refusals[0].retry_after_s, 0.0,
                        room_for_new_caller=core.admission_preview(0.0)["low"].room)
    assert door.check("low", now=0.1) is not None


def test_simulated_light_tenant_is_served_nearly_as_much_as_alone():
    """Issue 17's goal on the pure core: one replica, twice its capacity offered, tenants at 10:1."""
    result = light_share(Workload(seconds=60.0))
    assert result["alone"].served > 30  # it measured something
    assert result["light_served_vs_alone"] >= 0.9
    assert result["light_served_vs_alone_one_fifo"] < 0.8  # what the issue was: one FIFO per class


# --- adaptive LIFO: newest first once a tenant's oldest is past its class's TTFT target ------------------

def make_lifo_queue(max_size: int = 1000) -> PriorityRequestQueue:
    return PriorityRequestQueue(CLASSES, max_size=max_size, newest_first_after=1.0)


def test_a_tenant_serves_oldest_first_until_its_oldest_is_past_the_ttft_target_then_newest_first():
    queue = make_lifo_queue()
    for i in range(5):
        queue.push(f"r{i}", "high", 0.1 * i, 1)
    assert queue.pop_next(0.5).request_id == "r0"  # waited exactly the 0.5 s target: still oldest first
    assert queue.pop_next(0.61).request_id == "r4"  # r1 waited 0.51 s: it will miss; r4 (0.21 s) can still make it
    assert queue.pop_next(0.61).request_id == "r3"
    assert queue.pop_next(0.65).request_id == "r2"  # r1 was still late
    queue.push("r5", "high", 0.7, 1)
    assert [queue.pop_next(0.7).request_id for _ in range(2)] == ["r5", "r1"]
    assert queue.pop_next(0.7) is None


def test_newest_first_keeps_each_tenants_fair_share():
    queue = make_lifo_queue()
    for i in range(60):
        queue.push(f"g{i}", "low", 0.0, 1, tenant="gold", weight=2.0)
        queue.push(f"b{i}", "low", 0.0, 1, tenant="bronze", weight=1.0)
    popped = [queue.pop_next(20.0) for _ in range(30)]  # all waited 20 s of a 10 s target: newest first
    for window in range(0, 30, 3):  # 2:1 over every window of three, as oldest first
        assert sorted(e.tenant for e in popped[window:window + 3]) == ["bronze", "gold", "gold"]
    assert [e.request_id for e in popped if e.tenant == "bronze"][:3] == ["b59", "b58", "b57"]


def test_a_late_tenant_does_not_change_the_order_of_one_on_time():
    queue = make_lifo_queue()
    for i in range(3):
        queue.push(f"late{i}", "high", 0.0, 1, tenant="late")
    for i in range(3):
        queue.push(f"fresh{i}", "high", 0.9, 1, tenant="fresh")
    assert [queue.pop_next(1.0).request_id for _ in range(6)] == [
        "late2", "fresh0", "late1", "fresh1", "late0", "fresh2"]


def test_a_full_queue_sheds_what_newest_first_would_serve_last_the_oldest():
    queue = make_lifo_queue(max_size=10)
    for i in range(7):
        queue.push(f"h{i}", "low", float(i), 1, tenant="heavy")
    assert queue.last_below("high", 9.0).request_id == "h6"  # h0 waited 9 s of 10: oldest first, shed the newest
    assert queue.last_below("high", 10.5).request_id == "h0"  # h0 is late: newest first, shed the oldest


def test_a_request_removed_unserved_gives_up_its_tenants_last_turn_not_a_credit():
    queue = make_queue()
    for i in range(3):
        queue.push(f"a{i}", "low", 0.0, 1, tenant="a")
        queue.push(f"b{i}", "low", 0.0, 1, tenant="b")
    queue.remove("a0")  # a's two requests left keep its first two turns
    assert [queue.pop_next(0.0).request_id for _ in range(4)] == ["b0", "a1", "b1", "a2"]  # ties: push order
    queue.push("a3", "low", 0.0, 1, tenant="a")  # after its third turn: no credit for the removal
    assert [queue.pop_next(0.0).request_id for _ in range(2)] == ["b2", "a3"]


def test_newest_first_does_not_change_what_expires():
    queue = make_lifo_queue()
    for i in range(4):
        queue.push(f"r{i}", "high", float(i), 1)
    assert [e.request_id for e in queue.expired(6.5)] == ["r0", "r1"]  # the 5 s deadline, oldest first
    assert queue.pop_next(6.5).request_id == "r3"
