"""`RouterCore` with the same decisions at lower cost, for simulating hundreds of replicas.

One of the real router's operations grows with the number of requests held, which dominates a
simulation at thousands of requests per second: `RouterCore._targets` rebuilds the set of active
classes from every queued and running request on each completion; here it counts running requests
per class. (The queue's expiry used to be forked here too; the real one now stops at the first
fresh entry without copying, so the simulator uses it as it is.) Replica choice builds loads only for replicas with room (the same list
`choose_replica` would filter to, in the same order, so the seeded draw is the same).
`tests/unit/test_simulator_cluster.py` checks the decisions match RouterCore's.
"""
from __future__ import annotations

import random
from collections import Counter

from serve_app.policy.priority_classes import PriorityClasses
from serve_app.policy.replica_choice import ReplicaLoad, choose_replica
from serve_app.policy.router_core import Dispatch, RouterCore, RouterPolicy


class FastRouterCore(RouterCore):
    def __init__(self, classes: PriorityClasses, policy: RouterPolicy, rng: random.Random) -> None:
        super().__init__(classes, policy, rng)
        self._running_by_class: Counter[str] = Counter()
        self._levels = {name: classes.level_of(name) for name in classes.names}

    def _start(self, request_id: str, replica_id: str, waited_s: float) -> Dispatch:
        dispatch = super()._start(request_id, replica_id, waited_s)
        self._running_by_class[self._running[request_id].class_name] += 1
        return dispatch

    def _release(self, running):  # type: ignore[no-untyped-def]
        self._running_by_class[running.class_name] -= 1
        return super()._release(running)

    def _targets(self) -> tuple[float, float]:
        active = {name for name, n in self._queue.depth_by_class().items() if n}
        active |= {name for name, n in self._running_by_class.items() if n > 0}
        names = active or set(self._classes.names)
        return self._classes.tightest_ttft_slo(names), self._classes.tightest_tpot_slo(names)

    def _limit(self, class_name: str, replica) -> int:  # type: ignore[no-untyped-def]
        # RouterCore._limit with the class level and headroom looked up once (called per replica
        # for every admission and dispatch: the simulator's hottest line at hundreds of replicas).
        if self._levels.get(class_name, 0) != 0:
            return replica.window.window
        return super()._limit(class_name, replica)

    def _choose(self, request_id: str) -> str | None:
        queued = self._queued[request_id]
        if self._policy.prefix_affinity:
            return super()._choose(request_id)
        limit = self._limit
        name = queued.class_name
        loads = []
        for rid, r in self._replicas.items():
            window = limit(name, r)
            if r.in_flight < window:
                loads.append(ReplicaLoad(rid, r.outstanding_tokens, r.in_flight, window,
                                         dispatched_total=r.dispatched_total))
        return choose_replica(loads, self._rng)

    def queue_depth_by_class(self) -> dict[str, int]:
        return self._queue.depth_by_class()
