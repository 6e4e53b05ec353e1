"""Ray Serve request router that honours `target_replica=<unique id>` in a call's kwargs.

Replicas use it to hand a batch of tokens to the very ingress replica holding those requests;
calls without a target (HTTP traffic from the proxy) get Ray Serve's power-of-two choice.
Ray Serve's power-of-two router hands a chosen replica to the oldest pending call (FIFOMixin), which
would send one request's tokens to another ingress replica when several ingress replicas have
deliveries pending; the base `RequestRouter` matching gives each replica to the call it was chosen for.

A target that is gone fails the call at once. Returning no candidate would make Ray Serve retry the
choice in a tight loop on the router's event loop, shared by every call the process makes (a killed
ingress replica once wedged both LLM replicas at 81% CPU with all token delivery stopped).
"""
from __future__ import annotations

import time

from ray.serve.request_router import PendingRequest, RunningReplica

from serve_app.ray_compat import ChosenCallMatching, PowerOfTwoChoicesRequestRouter

TARGET_KWARG = "target_replica"
# A target this router has never seen may be a replica started a moment ago whose arrival has not
# reached this process yet; one it has seen and no longer lists is gone.
UNSEEN_TARGET_GRACE_S = 5.0


class TargetReplicaGone(RuntimeError):
    """The replica a call was addressed to is no longer running."""

    def __init__(self, target: str, seen: bool):
        super().__init__(f"replica {target} is {'gone' if seen else 'unknown'}")
        self.target = target


class RemembersListedReplicas:
    """Mixin for a `RequestRouter`: the replica ids it has ever been given, to tell a target started a
    moment ago (not listed here yet: wait for it) from one that is gone."""

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        self._seen_replica_ids().update(replica.replica_id.unique_id for replica in replicas)
        super().update_replicas(replicas)

    def _seen_replica_ids(self) -> set[str]:
        if not hasattr(self, "_seen_ids"):
            self._seen_ids: set[str] = set()
        return self._seen_ids

    def _may_still_arrive(self, target: str, pending_request: PendingRequest) -> bool:
        return (target not in self._seen_replica_ids()
                and time.time() - pending_request.created_at < UNSEEN_TARGET_GRACE_S)


class TargetedRequestRouter(RemembersListedReplicas, ChosenCallMatching, PowerOfTwoChoicesRequestRouter):

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        target = pending_request.kwargs.get(TARGET_KWARG) if pending_request is not None else None
        if target is None:
            return await super().choose_replicas(candidate_replicas, pending_request)
        chosen = [[replica] for replica in candidate_replicas if replica.replica_id.unique_id == target]
        if chosen:
            return chosen
        pending_request.routing_context.should_backoff = True
        if not self._may_still_arrive(target, pending_request) and candidate_replicas:
            if not pending_request.future.done():
                pending_request.future.set_exception(TargetReplicaGone(target, target in self._seen_replica_ids()))
            # Any candidate hands control back to Ray Serve's loop, which sees the call settled and stops.
            return [[candidate_replicas[0]]]
        return []
