"""Our Ray Serve request routers hand each chosen replica to the very call it was chosen for.

Both route calls that name a `target_replica` (the router deployment's choice of LLM replica, or
the ingress replica holding a request's stream). Ray Serve's FIFOMixin would give a replica chosen
for one pending call to the oldest pending call instead; behind a burst that sent calls to replicas
nobody chose for them (a CI run saw a call meant for a survivor go to a killed replica)."""
from __future__ import annotations

from collections import deque

import pytest

from serve_app.routing.least_outstanding_tokens import LeastOutstandingTokensRouter
from serve_app.routing.targeted import TargetedRequestRouter


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
