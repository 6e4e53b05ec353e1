"""Ray Serve request router for LLM replicas: power-of-two choices on outstanding tokens.

A thin shell: the choice itself is `serve_app.policy.replica_choice.choose_replica`. Load is
what the replicas report (`record_routing_stats`) or, between reports, what this router has
sent them itself, whichever is larger. A call naming `target_replica` (the router deployment's
choice) goes there while that replica is running; otherwise (it just died) to the best other. A target
this router has not seen yet is a replica started a moment ago whose arrival has not reached this process:
the call waits for it (up to `UNSEEN_TARGET_GRACE_S`) rather than run elsewhere. By pull the ingress reads
a request's parts from the replica it chose; one run on another replica had no stream to go out by when the
ingress held none to that one (CI: a request sent just after a new replica came up waited 30 s, then 503).

No FIFOMixin: with it, a replica chosen for one pending call is handed to the oldest pending call,
so under a burst calls went to replicas the router deployment had not chosen for them (CI saw a
call meant for the survivor of a killed replica sent to the dead one, and the survivor blamed).
Ray Serve's base `RequestRouter` gives each chosen replica to exactly the call it was chosen for.
"""
from __future__ import annotations

import random
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from serve_app.policy.replica_choice import ReplicaLoad, choose_replica
from serve_app.routing.targeted import TARGET_KWARG, RemembersListedReplicas


def _request_cost(pending_request: PendingRequest | None) -> int:
    if pending_request is None or not pending_request.args:
        return 0
    return int(getattr(pending_request.args[0], "cost_tokens", 0))


class LeastOutstandingTokensRouter(RemembersListedReplicas, RequestRouter):
    def initialize_state(self, seed: int | None = None, **kwargs: Any) -> None:
        self._rng = random.Random(seed)
        # internal request id -> (replica, cost) for requests this router sent and that are not done.
        self._sent: dict[str, tuple[ReplicaID, int]] = {}
        self._sent_tokens: dict[ReplicaID, int] = {}
        self._sent_count: dict[ReplicaID, int] = {}
        self._routed_total: dict[ReplicaID, int] = {}

    def _load_of(self, replica: RunningReplica) -> ReplicaLoad:
        stats = replica.routing_stats or {}
        replica_id = replica.replica_id
        return ReplicaLoad(
            replica_id=replica_id.unique_id,
            outstanding_tokens=max(int(stats.get("outstanding_tokens", 0)), self._sent_tokens.get(replica_id, 0)),
            in_flight=max(int(stats.get("in_flight", 0)), self._sent_count.get(replica_id, 0)),
            # The controller's cap (no KV preemption at observed lengths), within Ray Serve's own.
            window=min(replica.max_ongoing_requests, int(stats.get("window_cap") or replica.max_ongoing_requests)),
            kv_cache_usage=float(stats.get("kv_cache_usage", 0.0)),
            dispatched_total=self._routed_total.get(replica_id, 0),
        )

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        by_id = {replica.replica_id.unique_id: replica for replica in candidate_replicas}
        target = pending_request.kwargs.get(TARGET_KWARG) if pending_request is not None else None
        if target in by_id:
            # The router deployment already chose (global queue and windows); honour it.
            return [[by_id[target]]]
        if target is not None and self._may_still_arrive(target, pending_request):
            # A replica just started, not yet listed here: wait for it (Ray Serve backs off and asks again).
            pending_request.routing_context.should_backoff = True
            return []
        loads = [self._load_of(replica) for replica in candidate_replicas]
        ranked: list[list[RunningReplica]] = []
        # Rank the whole set so Ray Serve falls through to the next best if the first rejects.
        while loads:
            chosen = choose_replica(loads, self._rng)
            if chosen is None:
                break
            ranked.append([by_id[chosen]])
            loads = [load for load in loads if load.replica_id != chosen]
        if not ranked and pending_request is not None:
            # Every replica at its window: Ray Serve must back off before asking again. Without the flag it asks
            # again at once, and this choice, which awaits nothing, spins the router's event loop (shared by every
            # call the process makes) until the loads it reads change, which that loop itself would have to do.
            pending_request.routing_context.should_backoff = True
        return ranked

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result) -> None:
        cost = _request_cost(pending_request)
        self._sent[pending_request.metadata.internal_request_id] = (replica_id, cost)
        self._sent_tokens[replica_id] = self._sent_tokens.get(replica_id, 0) + cost
        self._sent_count[replica_id] = self._sent_count.get(replica_id, 0) + 1
        self._routed_total[replica_id] = self._routed_total.get(replica_id, 0) + 1

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        sent = self._sent.pop(internal_request_id, None)
        if sent is None:
            return
        replica, cost = sent
        self._sent_tokens[replica] = max(0, self._sent_tokens.get(replica, 0) - cost)
        self._sent_count[replica] = max(0, self._sent_count.get(replica, 0) - 1)
