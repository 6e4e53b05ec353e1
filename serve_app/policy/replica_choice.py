"""Replica selection: power-of-two choices on outstanding tokens, with optional prefix affinity.

Affinity sends requests sharing a prompt prefix to one replica (KV prefix-cache hits) but
only while that replica is not much busier than average (bounded-load consistent hashing).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ReplicaLoad:
    """Router-side view of one replica's load."""

    replica_id: str
    outstanding_tokens: int  # prompt + max_tokens of requests in flight not yet finished
    in_flight: int
    window: int  # allowed in flight (adaptive batching)
    kv_cache_usage: float = 0.0  # reported for observability; not used to choose
    dispatched_total: int = 0  # requests ever sent there: breaks ties so idle replicas take turns


def _stable_hash64(data: bytes) -> int:
    # hashlib, not hash(): every router process must agree on the same replica for a prefix.
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def prefix_key_of(token_ids_or_text: Sequence[int] | str, block_size: int = 16, chars_per_token: int = 4) -> int:
    """Stable hash of the prompt's first KV block: tokens, or ~block_size tokens' worth of text.

    Prompts shorter than a block hash what they have (vLLM would not cache that partial block).
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if isinstance(token_ids_or_text, str):
        head = token_ids_or_text[: block_size * chars_per_token]
        return _stable_hash64(b"text:" + head.encode("utf-8"))
    head_ids = token_ids_or_text[:block_size]
    return _stable_hash64(b"tokens:" + ",".join(str(int(t)) for t in head_ids).encode("ascii"))


def rendezvous_replica(prefix_key: int, replica_ids: Sequence[str]) -> str | None:
    """Highest-random-weight choice: adding/removing a replica remaps only its own keys."""
    if not replica_ids:
        return None
    return max(replica_ids, key=lambda rid: (_stable_hash64(f"{prefix_key}:{rid}".encode()), rid))


NEAR_TIE_FRACTION = 0.1


def _lighter(first: ReplicaLoad, second: ReplicaLoad) -> ReplicaLoad:
    """The less loaded of two; within `NEAR_TIE_FRACTION` of each other's outstanding tokens (idle
    replicas, or ones holding requests of similar size) the one sent fewer requests so far, so that
    at low rates load alternates instead of always landing on the same replica."""
    heavier_tokens = max(first.outstanding_tokens, second.outstanding_tokens)
    gap = abs(first.outstanding_tokens - second.outstanding_tokens)
    if gap <= NEAR_TIE_FRACTION * heavier_tokens:
        return min(first, second, key=lambda load: (load.in_flight, load.dispatched_total, load.replica_id))
    return min(first, second, key=lambda load: load.outstanding_tokens)


def choose_replica(
    loads: Sequence[ReplicaLoad],
    rng: random.Random,
    *,
    prefix_key: int | None = None,
    headroom: int = 0,
    affinity_load_bound: float = 1.25,
) -> str | None:
    """Pick a replica with window room (in_flight < window + headroom), or None if all are full.

    With `prefix_key`, prefer its rendezvous replica while it has room and at most
    `affinity_load_bound` x the mean outstanding tokens; otherwise power-of-two choices.
    """
    eligible = [load for load in loads if load.in_flight < load.window + headroom]
    if not eligible:
        return None
    if prefix_key is not None:
        # Hash over all replicas, not just eligible ones, so a briefly full replica keeps its keys.
        preferred_id = rendezvous_replica(prefix_key, [load.replica_id for load in loads])
        load_limit = affinity_load_bound * sum(load.outstanding_tokens for load in loads) / len(loads)
        for load in eligible:
            if load.replica_id == preferred_id and load.outstanding_tokens <= load_limit:
                return load.replica_id
    if len(eligible) == 1:
        return eligible[0].replica_id
    first, second = rng.sample(eligible, 2)
    return _lighter(first, second).replica_id
