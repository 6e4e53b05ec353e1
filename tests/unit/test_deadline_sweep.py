"""DeadlineSweep: the expiry sweep's look-ahead follows how late the loop wakes it, on a fake clock."""
from __future__ import annotations

import random

import pytest

from serve_app.policy.api_keys import Caller
from serve_app.policy.deadline_sweep import DeadlineSweep
from serve_app.policy.priority_classes import PriorityClass, PriorityClasses
from serve_app.policy.router_core import RouterCore, RouterPolicy

DEADLINE_S = 15.0
CLASSES = PriorityClasses([PriorityClass("low", 0, ttft_slo_s=10.0, tpot_slo_s=0.2, queue_deadline_s=DEADLINE_S)])


def test_on_time_sweeps_look_one_period_ahead_with_the_margin():
    sweep = DeadlineSweep(period_s=0.05, now=0.0, margin=1.5)
    assert [sweep.look_ahead_s(0.05 * k) for k in range(1, 5)] == [pytest.approx(0.075)] * 4


def test_a_steadily_late_loop_widens_the_look_ahead_up_to_its_bound():
    sweep = DeadlineSweep(period_s=0.05, now=0.0, remembered_gaps=5, margin=1.5, max_ahead_s=0.25)
    now = 0.0
    for _ in range(5):
        now += 0.08  # woken 30 ms late every time
        ahead = sweep.look_ahead_s(now)
    assert ahead == pytest.approx(0.12)
    for _ in range(5):
        now += 0.3  # a starved machine: at most the bound
        ahead = sweep.look_ahead_s(now)
    assert ahead == pytest.approx(0.25)


def test_one_stall_does_not_make_the_later_sweeps_refuse_early():
    sweep = DeadlineSweep(period_s=0.05, now=0.0, remembered_gaps=40)
    now = 0.0
    for _ in range(10):
        now += 0.05
        sweep.look_ahead_s(now)
    now += 1.0  # a GC pause
    assert sweep.look_ahead_s(now) == pytest.approx(0.075)
    assert sweep.look_ahead_s(now + 0.05) == pytest.approx(0.075)


@pytest.mark.parametrize("bad", [{"period_s": 0.0}, {"remembered_gaps": 0}, {"margin": 0.9}, {"max_ahead_s": 0.01}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        DeadlineSweep(**{"period_s": 0.05, "now": 0.0, **bad})


def longest_refused_wait(look_ahead) -> float:
    """A queue that never drains (no replica), a request admitted every 10 ms for 20 s, swept by a loop
    that wakes 50 ms sweeps 20-40 ms late (as under a flood); the longest wait among the refused."""
    core = RouterCore(CLASSES, RouterPolicy(admission_warmup_completions=10**9), random.Random(0))
    rng = random.Random(1)
    caller = Caller("anyone", "low")
    now, next_admit, admitted = 0.0, 0.0, 0
    while now < 20.0 + DEADLINE_S:
        now += 0.05 + rng.uniform(0.02, 0.04)
        while next_admit <= now and next_admit < 20.0:
            assert core.admit(f"r{admitted}", "low", caller, 10, next_admit) is None
            admitted += 1
            next_admit += 0.01
        core.expire(now, ahead_s=look_ahead(now))
    stats = core.stats()["classes"]["low"]
    assert stats["expired"] == admitted  # every request was refused, none lost
    return stats["refused_wait_max_s"]


def test_with_the_sweep_no_refused_request_waits_past_its_deadline_where_a_fixed_period_did():
    assert longest_refused_wait(lambda now: 0.05) > DEADLINE_S  # the look-ahead before: one period
    sweep = DeadlineSweep(period_s=0.05, now=0.0)
    longest = longest_refused_wait(sweep.look_ahead_s)
    assert DEADLINE_S - 0.2 < longest <= DEADLINE_S
