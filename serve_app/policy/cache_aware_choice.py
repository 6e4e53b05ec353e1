"""Replica choice by cached prefix against load, as llm-d's scheduler weighs its scorers.

score = cache_weight * cached_tokens / prompt_tokens - load_weight * outstanding / max outstanding,
over replicas with room. A replica above `affinity_load_bound` x the candidates' mean outstanding
tokens is not chosen for its cache (no hot spot); with no cache hit among the rest the choice is
exactly the load-only one (`choose_replica`), so traffic without shared prefixes routes as before.
"""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from serve_app.policy.replica_choice import ReplicaLoad, choose_replica


def choose_cache_aware(
    loads: Sequence[ReplicaLoad],
    cached_tokens: Mapping[str, int],
    prompt_tokens: int,
    rng: random.Random,
    *,
    cache_weight: float,
    load_weight: float,
    affinity_load_bound: float,
) -> str | None:
    """Pick among `loads` (replicas with room; None if empty) by cached prefix tokens per replica id
    (absent: 0) and load."""
    if not loads:
        return None
    mean_outstanding = sum(load.outstanding_tokens for load in loads) / len(loads)
    load_limit = affinity_load_bound * mean_outstanding
    # The least loaded candidate is at or under the mean, so some replica always passes the bound.
    holders = [load for load in loads
               if cached_tokens.get(load.replica_id, 0) > 0 and load.outstanding_tokens <= load_limit]
    if not holders or prompt_tokens <= 0:
        return choose_replica(loads, rng)
    max_outstanding = max(load.outstanding_tokens for load in loads) or 1

    def cached_share(load: ReplicaLoad) -> float:
        if load.outstanding_tokens > load_limit:
            return 0.0
        return min(cached_tokens.get(load.replica_id, 0), prompt_tokens) / prompt_tokens

    def rank(load: ReplicaLoad) -> tuple[float, int, int, str]:
        score = cache_weight * cached_share(load) - load_weight * load.outstanding_tokens / max_outstanding
        # Equal scores: fewer in flight, then fewer sent so far (idle replicas take turns).
        return (-score, load.in_flight, load.dispatched_total, load.replica_id)

    return min(loads, key=rank).replica_id
