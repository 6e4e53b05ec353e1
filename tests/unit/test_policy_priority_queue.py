import pytest

from serve_app.policy.priority_classes import PriorityClass, PriorityClasses, UnknownPriorityClass
from serve_app.policy.priority_queue import PriorityRequestQueue, QueueFull


def make_classes() -> PriorityClasses:
    return PriorityClasses(
        [
            PriorityClass("high", 0, ttft_slo_s=0.5, tpot_slo_s=0.05, queue_deadline_s=5.0),
            PriorityClass("mid", 1, ttft_slo_s=2.0, tpot_slo_s=0.1, queue_deadline_s=20.0),
            PriorityClass("low", 2, ttft_slo_s=10.0, tpot_slo_s=0.2, queue_deadline_s=100.0),
        ]
    )


def make_queue(max_size: int = 100, aging_interval_s: float | None = None) -> PriorityRequestQueue:
    return PriorityRequestQueue(make_classes(), max_size=max_size, aging_interval_s=aging_interval_s)


def pop_all_ids(queue: PriorityRequestQueue, now: float) -> list[str]:
    popped = []
    while (entry := queue.pop_next(now)) is not None:
        popped.append(entry.request_id)
    return popped


def test_strict_priority_between_classes_fifo_within():
    queue = make_queue()
    queue.push("low-1", "low", 0.0, 10)
    queue.push("mid-1", "mid", 1.0, 10)
    queue.push("high-1", "high", 2.0, 10)
    queue.push("low-2", "low", 3.0, 10)
    queue.push("high-2", "high", 4.0, 10)
    queue.push("mid-2", "mid", 5.0, 10)
    assert pop_all_ids(queue, 6.0) == ["high-1", "high-2", "mid-1", "mid-2", "low-1", "low-2"]
    assert len(queue) == 0


def test_push_returns_entry_with_arrival_and_level():
    queue = make_queue()
    entry = queue.push("r1", "mid", 3.5, 42)
    assert (entry.request_id, entry.class_name, entry.level, entry.arrival_s, entry.cost_tokens) == (
        "r1",
        "mid",
        1,
        3.5,
        42,
    )
    assert entry.waited_s(5.0) == 1.5


def test_pop_and_peek_on_empty_queue():
    queue = make_queue()
    assert queue.peek_next(0.0) is None
    assert queue.pop_next(0.0) is None


def test_peek_does_not_remove():
    queue = make_queue()
    queue.push("a", "mid", 0.0, 1)
    assert queue.peek_next(1.0).request_id == "a"
    assert queue.peek_next(1.0).request_id == "a"
    assert len(queue) == 1


def test_same_arrival_time_keeps_push_order():
    queue = make_queue()
    for request_id in ["c", "a", "b"]:
        queue.push(request_id, "mid", 1.0, 1)
    assert pop_all_ids(queue, 1.0) == ["c", "a", "b"]


def test_no_aging_means_low_class_starves_behind_high_stream():
    queue = make_queue(aging_interval_s=None)
    queue.push("low", "low", 0.0, 1)
    popped = []
    for tick in range(50):
        now = float(tick)
        queue.push(f"high-{tick}", "high", now, 1)
        popped.append(queue.pop_next(now).request_id)
    assert "low" not in popped
    assert queue.peek_next(1000.0).request_id == "low"


def test_aging_lets_low_class_beat_a_stream_of_high_requests():
    queue = make_queue(aging_interval_s=2.0)
    queue.push("low", "low", 0.0, 1)
    popped = []
    # Each tick one new high request arrives and one request is dispatched.
    for tick in range(10):
        now = float(tick)
        queue.push(f"high-{tick}", "high", now, 1)
        popped.append(queue.pop_next(now).request_id)
    # At t=4 the low request has aged two classes (level 0) and is older than every
    # queued high request, so it wins that pop.
    assert popped.index("low") == 4
    assert popped[:4] == ["high-0", "high-1", "high-2", "high-3"]


def test_aging_one_class_ties_broken_by_earliest_arrival():
    queue = make_queue(aging_interval_s=10.0)
    queue.push("mid-old", "mid", 0.0, 1)
    queue.push("high-new", "high", 5.0, 1)
    # At t=9.9 mid has not aged yet; at t=10 it counts as "high" and is older.
    assert queue.peek_next(9.9).request_id == "high-new"
    assert queue.peek_next(10.0).request_id == "mid-old"


def test_effective_level_never_goes_below_zero():
    queue = make_queue(aging_interval_s=1.0)
    entry = queue.push("low", "low", 0.0, 1)
    assert [queue.effective_level(entry, t) for t in (0.0, 0.99, 1.0, 2.0, 50.0)] == [2, 2, 1, 0, 0]


def test_aging_does_not_reorder_within_a_class():
    queue = make_queue(aging_interval_s=1.0)
    queue.push("low-1", "low", 0.0, 1)
    queue.push("low-2", "low", 0.5, 1)
    queue.push("high-1", "high", 3.0, 1)
    assert pop_all_ids(queue, 3.0) == ["low-1", "low-2", "high-1"]


def test_remove_cancels_a_queued_request():
    queue = make_queue()
    queue.push("a", "high", 0.0, 1)
    queue.push("b", "high", 1.0, 1)
    queue.push("c", "low", 2.0, 1)
    assert queue.remove("a") is True
    assert "a" not in queue
    assert queue.remove("a") is False
    assert queue.remove("never-queued") is False
    assert len(queue) == 2
    assert queue.depth_by_class() == {"high": 1, "mid": 0, "low": 1}
    assert pop_all_ids(queue, 3.0) == ["b", "c"]


def test_removed_id_can_be_pushed_again():
    queue = make_queue()
    queue.push("a", "low", 0.0, 1)
    queue.remove("a")
    queue.push("a", "high", 1.0, 1)
    assert queue.pop_next(1.0).class_name == "high"


def test_duplicate_request_id_rejected():
    queue = make_queue()
    queue.push("a", "low", 0.0, 1)
    with pytest.raises(ValueError, match="already queued"):
        queue.push("a", "high", 1.0, 1)
    assert len(queue) == 1


def test_unknown_class_rejected():
    queue = make_queue()
    with pytest.raises(UnknownPriorityClass):
        queue.push("a", "vip", 0.0, 1)
    assert len(queue) == 0


def test_negative_cost_rejected():
    with pytest.raises(ValueError, match="cost_tokens"):
        make_queue().push("a", "low", 0.0, -1)


def test_clock_going_backwards_on_push_rejected():
    queue = make_queue()
    queue.push("a", "low", 5.0, 1)
    with pytest.raises(ValueError, match="backwards"):
        queue.push("b", "low", 4.0, 1)
    queue.push("c", "low", 5.0, 1)  # equal time is fine
    assert len(queue) == 2


def test_queue_full_raises_and_frees_after_pop():
    queue = make_queue(max_size=2)
    queue.push("a", "low", 0.0, 1)
    queue.push("b", "low", 0.0, 1)
    with pytest.raises(QueueFull) as excinfo:
        queue.push("c", "high", 0.0, 1)
    assert excinfo.value.max_size == 2
    assert "c" not in queue
    assert len(queue) == 2
    queue.pop_next(0.0)
    queue.push("c", "high", 0.0, 1)
    assert len(queue) == 2


@pytest.mark.parametrize("bad", [{"max_size": 0}, {"max_size": 1, "aging_interval_s": 0.0}])
def test_invalid_construction(bad):
    with pytest.raises(ValueError):
        PriorityRequestQueue(make_classes(), **bad)


def test_expired_removes_entries_past_their_class_deadline():
    queue = make_queue()
    queue.push("high-old", "high", 0.0, 1)  # deadline 5 s
    queue.push("mid-old", "mid", 0.0, 1)  # deadline 20 s
    queue.push("low-old", "low", 1.0, 1)  # deadline 100 s
    queue.push("high-new", "high", 4.0, 1)
    assert queue.expired(5.0) == []  # exactly at the deadline is not past it
    expired = queue.expired(6.0)
    assert [e.request_id for e in expired] == ["high-old"]
    assert "high-old" not in queue
    expired = queue.expired(21.0)
    assert [e.request_id for e in expired] == ["mid-old", "high-new"]
    assert queue.depth_by_class() == {"high": 0, "mid": 0, "low": 1}
    assert queue.expired(21.0) == []


def test_expired_returns_entries_in_arrival_order_across_classes():
    queue = make_queue()
    queue.push("low-a", "low", 0.0, 1)
    queue.push("high-a", "high", 1.0, 1)
    queue.push("low-b", "low", 2.0, 1)
    assert [e.request_id for e in queue.expired(500.0)] == ["low-a", "high-a", "low-b"]
    assert len(queue) == 0


def test_depth_by_class_lists_every_class_in_rank_order():
    queue = make_queue()
    assert list(queue.depth_by_class().items()) == [("high", 0), ("mid", 0), ("low", 0)]
    queue.push("a", "low", 0.0, 1)
    queue.push("b", "low", 0.0, 1)
    queue.push("c", "high", 0.0, 1)
    assert queue.depth_by_class() == {"high": 1, "mid": 0, "low": 2}


def test_depth_at_or_above_counts_same_and_better_classes():
    queue = make_queue()
    for i, class_name in enumerate(["high", "mid", "mid", "low", "low", "low"]):
        queue.push(f"r{i}", class_name, 0.0, 1)
    assert queue.depth_at_or_above("high") == 1
    assert queue.depth_at_or_above("mid") == 3
    assert queue.depth_at_or_above("low") == 6


def test_max_size_property():
    assert make_queue(max_size=7).max_size == 7


def test_expired_ahead_refuses_what_would_pass_its_deadline_before_the_next_check():
    queue = make_queue()
    queue.push("high-old", "high", 0.0, 1)  # deadline 5 s
    queue.push("high-new", "high", 1.0, 1)
    # Checked every 50 ms: at 4.96 s the first would be 5.01 s old at the next check, past its deadline.
    assert [e.request_id for e in queue.expired(4.96, ahead_s=0.05)] == ["high-old"]
    assert queue.expired(4.96, ahead_s=0.05) == []
