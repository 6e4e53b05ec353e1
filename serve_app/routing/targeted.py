"""Ray Serve request router that honours `target_replica=<unique id>` in a call's kwargs.

Replicas use it to hand a batch of tokens to the very ingress replica holding those requests;
calls without a target (HTTP traffic from the proxy) get Ray Serve's power-of-two choice.
Ray Serve's power-of-two router hands a chosen replica to the oldest pending call (FIFOMixin), which
would send one request's tokens to another ingress replica when several ingress replicas have
deliveries pending; the base `RequestRouter` matching gives each replica to the call it was chosen for.
"""
from __future__ import annotations

from ray.serve._private.request_router.pow_2_router import PowerOfTwoChoicesRequestRouter
from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

TARGET_KWARG = "target_replica"


class TargetedRequestRouter(PowerOfTwoChoicesRequestRouter):
    _fulfill_next_pending_request = RequestRouter._fulfill_next_pending_request

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        target = pending_request.kwargs.get(TARGET_KWARG) if pending_request is not None else None
        if target is None:
            return await super().choose_replicas(candidate_replicas, pending_request)
        return [[replica] for replica in candidate_replicas if replica.replica_id.unique_id == target]
