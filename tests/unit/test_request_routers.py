"""Our Ray Serve request routers hand each chosen replica to the very call it was chosen for.

Both route calls that name a `target_replica` (the router deployment's choice of LLM replica, or
the ingress replica holding a request's stream). Ray Serve's FIFOMixin would give a replica chosen
for one pending call to the oldest pending call instead; behind a burst that sent calls to replicas
nobody chose for them (a CI run saw a call meant for a survivor go to a killed replica)."""
from __future__ import annotations

from collections import deque

import pytest

from serve_app.routing.least_outstanding_tokens import LeastOutstandingTokensRouter
from serve_app.routing.targeted import RemembersListedReplicas, TargetedRequestRouter


class _Future:
    def __init__(self) -> None:
        self.result = None

    def done(self) -> bool:
        return self.result is not None

    def set_result(self, value) -> None:
        self.result = value


class _Pending:
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.future = _Future()


class _RouterState:
    """The pending-call bookkeeping `_fulfill_next_pending_request` reads, for two pending calls."""

    def __init__(self) -> None:
        self.oldest, self.chosen_for = _Pending("oldest"), _Pending("chosen-for")
        self._pending_requests_to_fulfill = deque([self.oldest, self.chosen_for])
        self._by_id = {p.request_id: p for p in self._pending_requests_to_fulfill}

    def _get_pending_request_matching_internal_request_id(self, metadata):
        return self._by_id.get(metadata)

    def _get_pending_request_matching_metadata(self, metadata):  # FIFOMixin's hook
        return None

    def _cancel_routing_task_for_pending_request(self, pending) -> None:
        pass

    def _record_queue_wait_time(self, pending) -> None:
        pass

    def _remove_pending_request_from_indices(self, pending) -> None:
        self._by_id.pop(pending.request_id, None)


@pytest.mark.parametrize("router", [LeastOutstandingTokensRouter, TargetedRequestRouter])
def test_a_replica_chosen_for_a_call_goes_to_that_call_not_the_oldest_pending(router):
    state = _RouterState()
    router._fulfill_next_pending_request(state, "replica-b", "chosen-for")
    assert state.chosen_for.future.result == "replica-b"
    assert state.oldest.future.result is None


class _Context:
    should_backoff = False


class _AsyncioLikeFuture(_Future):
    def __init__(self) -> None:
        super().__init__()
        self.error = None

    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def set_exception(self, error) -> None:
        self.error = error


class _TargetedCall:
    def __init__(self, target: str, age_s: float) -> None:
        import time

        self.kwargs = {"target_replica": target}
        self.created_at = time.time() - age_s
        self.future = _AsyncioLikeFuture()
        self.routing_context = _Context()


class _Replica:
    def __init__(self, unique_id: str) -> None:
        from types import SimpleNamespace

        self.replica_id = SimpleNamespace(unique_id=unique_id)


class _SeenState(RemembersListedReplicas):
    def __init__(self, seen: set[str]) -> None:
        self.seen = seen

    def _seen_replica_ids(self) -> set[str]:
        return self.seen


def _choose(state, candidates, call):
    import asyncio

    return asyncio.run(TargetedRequestRouter.choose_replicas(state, candidates, call))


def test_a_call_for_an_ingress_replica_that_is_gone_fails_at_once():
    """Ray Serve would otherwise retry the choice in a loop on the process's shared router thread."""
    from serve_app.routing.targeted import TargetReplicaGone

    live = [_Replica("ingress-b")]
    call = _TargetedCall("ingress-a", age_s=0.0)
    chosen = _choose(_SeenState({"ingress-a", "ingress-b"}), live, call)
    assert isinstance(call.future.error, TargetReplicaGone)
    assert chosen  # hands control back so Ray Serve sees the call settled


def test_a_target_not_seen_yet_gets_a_grace_period_then_fails():
    live = [_Replica("ingress-b")]
    fresh = _TargetedCall("ingress-new", age_s=0.0)
    assert _choose(_SeenState({"ingress-b"}), live, fresh) == []
    assert not fresh.future.done() and fresh.routing_context.should_backoff
    stale = _TargetedCall("ingress-new", age_s=60.0)
    _choose(_SeenState({"ingress-b"}), live, stale)
    assert stale.future.done()


def test_a_live_target_is_chosen():
    live = [_Replica("ingress-a"), _Replica("ingress-b")]
    call = _TargetedCall("ingress-b", age_s=0.0)
    assert [[r.replica_id.unique_id for r in group] for group in _choose(_SeenState(set()), live, call)] == [["ingress-b"]]
    assert not call.future.done()


class _LlmReplica:
    def __init__(self, unique_id: str) -> None:
        from ray.serve.request_router import ReplicaID

        self.replica_id = ReplicaID(unique_id, deployment_id=None)
        self.routing_stats = {}
        self.max_ongoing_requests = 8


def _llm_router(seen: set[str]) -> LeastOutstandingTokensRouter:
    router = object.__new__(LeastOutstandingTokensRouter)  # no Ray Serve around it: only its choice
    router.initialize_state(seed=0)
    router._seen_replica_ids().update(seen)
    return router


def _choose_llm(router, candidates, call) -> list[list[str]]:
    import asyncio

    groups = asyncio.run(router.choose_replicas(candidates, call))
    return [[r.replica_id.unique_id for r in group] for group in groups]


def test_a_call_for_an_llm_replica_not_seen_yet_waits_for_it_then_goes_to_another():
    """By pull the ingress reads a request's parts from the replica it chose: run elsewhere, they could
    wait for a stream the ingress never opens to that replica."""
    live = [_LlmReplica("llm-a")]
    fresh = _TargetedCall("llm-new", age_s=0.0)
    assert _choose_llm(_llm_router({"llm-a"}), live, fresh) == []
    assert not fresh.future.done() and fresh.routing_context.should_backoff
    # Once listed, it is chosen.
    assert _choose_llm(_llm_router({"llm-a", "llm-new"}), [*live, _LlmReplica("llm-new")], fresh) == [["llm-new"]]
    # Never listed within the grace: the best other, as for a target that is gone.
    stale = _TargetedCall("llm-new", age_s=60.0)
    assert _choose_llm(_llm_router({"llm-a"}), live, stale) == [["llm-a"]]


def test_a_call_for_an_llm_replica_that_is_gone_goes_to_the_best_other_at_once():
    live = [_LlmReplica("llm-b")]
    call = _TargetedCall("llm-a", age_s=0.0)
    assert _choose_llm(_llm_router({"llm-a", "llm-b"}), live, call) == [["llm-b"]]
    assert not call.routing_context.should_backoff


class _UntargetedCall(_TargetedCall):
    def __init__(self) -> None:
        super().__init__("", age_s=0.0)
        self.kwargs = {}


def _in_ray_serves_retry_loop(router: LeastOutstandingTokensRouter, replicas: list[_LlmReplica], call,
                              max_choices: int = 100, wait_s: float = 0.3) -> tuple[list[str] | None, int]:
    """Ray Serve's own retry loop (`_choose_replicas_with_backoff`) around the router's choice, for `wait_s`:
    the first group it offers (None: none) and how many times it asked the router. More than `max_choices`
    asks raise inside the loop: without backing off it would ask in a loop that never yields, which no
    timeout here could interrupt."""
    import asyncio
    from types import SimpleNamespace

    router._replicas = {replica.replica_id: replica for replica in replicas}
    router._replicas_list = list(replicas)
    router.num_routing_tasks_in_backoff = 0
    router.num_routing_tasks_in_backoff_gauge = SimpleNamespace(set=lambda value: None)
    router.initial_backoff_s, router.backoff_multiplier, router.max_backoff_s = 0.025, 2, 0.5
    asks = 0
    choose = router.choose_replicas

    async def counted(candidate_replicas, pending_request=None):
        nonlocal asks
        asks += 1
        if asks > max_choices:
            raise RuntimeError(f"asked {asks} times without backing off")
        return await choose(candidate_replicas, pending_request)

    router.choose_replicas = counted

    async def first_offer():
        offers = router._choose_replicas_with_backoff(call)
        try:
            group = await asyncio.wait_for(offers.__anext__(), wait_s)
            return [replica.replica_id.unique_id for replica in group]
        except asyncio.TimeoutError:
            return None
        finally:
            await offers.aclose()

    return asyncio.run(first_offer()), asks


def test_with_every_llm_replica_at_its_window_ray_serve_backs_off_instead_of_spinning():
    """A call with no target (vLLM's app: models, tokenize, a stored response) while every window is full:
    the router offers nothing, and Ray Serve must sleep before asking again (25, 50, 100, ... ms) rather
    than spin its router's event loop."""
    full = _LlmReplica("llm-a")
    full.routing_stats = {"in_flight": full.max_ongoing_requests}
    offered, asks = _in_ray_serves_retry_loop(_llm_router({"llm-a"}), [full], _UntargetedCall())
    assert offered is None
    assert 2 <= asks <= 10  # 0.3 s of backing off: ~5 asks


def test_a_replica_with_room_is_offered_on_the_first_ask():
    full, free = _LlmReplica("llm-a"), _LlmReplica("llm-b")
    full.routing_stats = {"in_flight": full.max_ongoing_requests}
    offered, asks = _in_ray_serves_retry_loop(_llm_router({"llm-a", "llm-b"}), [full, free], _UntargetedCall())
    assert offered == ["llm-b"] and asks == 1
