"""`router.lower_class_prefill_tokens`: while the top class is about, lower-class prompts not yet prefilled on a
replica stay within a budget (one may always start), so that a clump of them cannot fill the engine's steps
ahead of a top-class prompt. On a fake clock."""
from __future__ import annotations

import random

from serve_app.policy.api_keys import Caller
from serve_app.policy.priority_classes import PriorityClass, PriorityClasses
from serve_app.policy.router_core import TOP_CLASS_ACTIVE_S, RouterCore, RouterPolicy

CLASSES = PriorityClasses([
    PriorityClass("interactive", 0, ttft_slo_s=0.25, tpot_slo_s=0.1, queue_deadline_s=2.0),
    PriorityClass("batch", 1, ttft_slo_s=10.0, tpot_slo_s=0.2, queue_deadline_s=15.0),
])
ANYONE = Caller("anyone", "interactive")


def make_core(budget: int | None) -> RouterCore:
    policy = RouterPolicy(initial_window=32, aging_interval_s=None, initial_service_rate_rps=100.0,
                          admission_warmup_completions=0, lower_class_prefill_tokens=budget,
                          window_tuning={"slow_start": False})
    core = RouterCore(CLASSES, policy, random.Random(0))
    core.set_replicas({"r1": 64})
    return core


def admit(core: RouterCore, request_id: str, class_name: str, now: float, prompt_tokens: int) -> None:
    assert core.admit(request_id, class_name, ANYONE, prompt_tokens + 64, now, prompt_tokens=prompt_tokens) is None


def dispatched(core: RouterCore, now: float) -> list[str]:
    return [d.request_id for d in core.take_dispatches(now)]


def test_while_the_top_class_is_about_lower_prompts_wait_for_earlier_ones_first_tokens():
    core = make_core(budget=600)
    admit(core, "i1", "interactive", 0.0, prompt_tokens=256)
    assert dispatched(core, 0.0) == ["i1"]
    for i in range(4):
        admit(core, f"b{i}", "batch", 0.1, prompt_tokens=256)
    # The top class's own prompt counts against the room: 256 + 256 <= 600, a third would not fit.
    assert dispatched(core, 0.1) == ["b0"]
    assert core.stats()["replicas"]["r1"]["prefilling_tokens"] == 512 and core.stats()["prefill_holds"] == 1
    core.first_token("i1", 0.12)
    assert dispatched(core, 0.12) == ["b1"]
    core.first_token("b0", 0.15)
    core.first_token("b1", 0.15)
    assert dispatched(core, 0.15) == ["b2", "b3"]  # 512 <= 600 again with both earlier prompts done
    # The top class itself is never held: its prompt goes in beside all of them.
    admit(core, "i2", "interactive", 0.2, prompt_tokens=900)
    assert dispatched(core, 0.2) == ["i2"]


def test_one_lower_prompt_longer_than_the_budget_still_starts_alone():
    core = make_core(budget=100)
    admit(core, "i1", "interactive", 0.0, prompt_tokens=10)
    assert dispatched(core, 0.0) == ["i1"]
    core.first_token("i1", 0.01)
    admit(core, "b0", "batch", 0.1, prompt_tokens=1000)
    admit(core, "b1", "batch", 0.1, prompt_tokens=10)
    assert dispatched(core, 0.1) == ["b0"]  # nothing prefilling: it starts, however long
    core.finish("b0", 0.3, ok=True)  # an end (here without a first token) frees its prompt's room too
    assert dispatched(core, 0.3) == ["b1"]


def test_without_the_top_class_about_or_without_a_budget_lower_prompts_start_together():
    core = make_core(budget=300)
    for i in range(4):
        admit(core, f"b{i}", "batch", 0.0, prompt_tokens=256)
    assert dispatched(core, 0.0) == ["b0", "b1", "b2", "b3"]  # no top-class request seen: no budget
    core = make_core(budget=300)
    admit(core, "i1", "interactive", 0.0, prompt_tokens=10)
    assert dispatched(core, 0.0) == ["i1"]
    core.finish("i1", 0.5, ok=True)
    later = TOP_CLASS_ACTIVE_S + 1.0
    for i in range(3):
        admit(core, f"b{i}", "batch", later, prompt_tokens=256)
    assert dispatched(core, later) == ["b0", "b1", "b2"]  # the top class has been gone for a while
    core = make_core(budget=None)
    admit(core, "i1", "interactive", 0.0, prompt_tokens=10)
    for i in range(3):
        admit(core, f"b{i}", "batch", 0.0, prompt_tokens=256)
    assert dispatched(core, 0.0) == ["i1", "b0", "b1", "b2"]
    assert core.stats()["prefill_holds"] == 0


def test_a_whole_answer_whose_first_token_is_never_reported_does_not_hold_the_room():
    core = make_core(budget=300)
    admit(core, "i1", "interactive", 0.0, prompt_tokens=10)
    assert dispatched(core, 0.0) == ["i1"]
    core.first_token("i1", 0.01)
    assert core.admit("w1", "batch", ANYONE, 300, 0.1, prompt_tokens=256, first_token_seen=False) is None
    admit(core, "b1", "batch", 0.1, prompt_tokens=256)
    assert dispatched(core, 0.1) == ["w1", "b1"]  # w1's prompt would count until its end: it is not counted
    assert core.stats()["replicas"]["r1"]["prefilling_tokens"] == 256
