"""The router core's cache-aware part (`routing: precise_prefix | approximate_prefix`): the prefix
cache index that routing keeps, the choice over it, and the predicted hits booked per replica and class.

Predicted hit: the cached prefix the index showed on the chosen replica when the request was sent
(tokens), against the request's prompt tokens; cumulative, for comparison with vLLM's own hit rate.
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from serve_app.policy.cache_aware_choice import choose_cache_aware
from serve_app.policy.prefix_cache_index import CacheEvent, DispatchedPrefixIndex, PrefixCacheIndex, PrefixIndex
from serve_app.policy.replica_choice import ReplicaLoad
from serve_app.policy.router_settings import RouterSettings

# vLLM's default KV block size, until a replica reports its own (`set_capacity`).
DEFAULT_BLOCK_SIZE = 16
# `precise_prefix`: how long a prompt just sent counts as cached on its replica before the replica's own
# events say so. Events reach the router a pull period (0.1 s) after vLLM stores the blocks, which is
# after the prompt's prefill: without this, a burst sharing a new prefix would be spread over replicas
# that all look empty. Long enough for a prefill under load, short enough that an eviction the events
# report is believed soon.
IN_FLIGHT_TTL_S = 5.0


@dataclass
class PrefixHits:
    """Predicted prefix-cache hits of dispatched requests, in tokens."""

    hit_tokens: int = 0
    prompt_tokens: int = 0

    def book(self, hit_tokens: int, prompt_tokens: int) -> None:
        self.hit_tokens += hit_tokens
        self.prompt_tokens += prompt_tokens

    @property
    def rate(self) -> float | None:
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else None


class HitBook:
    """Prefix-cache hits per replica and per class, in tokens (cumulative)."""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.by_replica: dict[str, PrefixHits] = {}
        self.by_class = {name: PrefixHits() for name in class_names}

    def book(self, replica_id: str, class_name: str, hit_tokens: int, prompt_tokens: int) -> None:
        hits = self.by_replica.get(replica_id)
        if hits is None:
            hits = self.by_replica[replica_id] = PrefixHits()
        hits.book(hit_tokens, prompt_tokens)
        self.by_class[class_name].book(hit_tokens, prompt_tokens)

    def forget(self, replica_id: str) -> None:
        self.by_replica.pop(replica_id, None)

    def add_stats(self, stats: dict[str, Any], rate_key: str, counters: tuple[str, str] | None = None) -> None:
        """`rate_key` per class and replica (None before any); with `counters`, the hit and prompt tokens
        per replica too (for rates over an interval: the difference of two reads)."""
        for class_name, entry in stats["classes"].items():
            entry[rate_key] = self.by_class[class_name].rate
        for replica_id, entry in stats["replicas"].items():
            hits = self.by_replica.get(replica_id, PrefixHits())
            entry[rate_key] = hits.rate
            if counters is not None:
                entry[counters[0]], entry[counters[1]] = hits.hit_tokens, hits.prompt_tokens


class PrefixRouting:
    """Cache-aware replica choice for one router core; `now` comes from the core's caller."""

    def __init__(self, settings: RouterSettings, class_names: Sequence[str]) -> None:
        self._settings = settings
        self._events: PrefixCacheIndex | None = None
        # Where prompts were sent: approximate routing's whole index; precise routing's belief in what
        # the events do not show yet (`IN_FLIGHT_TTL_S`), beside the events' index.
        if settings.routing == "precise_prefix":
            self._events = PrefixCacheIndex()
            self._index: PrefixIndex = self._events
            self._sent = DispatchedPrefixIndex(IN_FLIGHT_TTL_S)
        elif settings.routing == "approximate_prefix":
            self._sent = DispatchedPrefixIndex(settings.approximate_cache_ttl_s)
            self._index = self._sent
        else:
            raise ValueError(f"routing {settings.routing!r} keeps no prefix cache index")
        # One engine config behind the router: every replica has the block size the last one reported.
        self._block_size = DEFAULT_BLOCK_SIZE
        self._predicted = HitBook(class_names)

    # ---- what replicas report ----
    def apply_events(self, replica_id: str, events: Iterable[CacheEvent]) -> None:
        """A replica's KV cache events; approximate routing keeps no events, so it ignores them."""
        if self._events is not None:
            self._events.apply(replica_id, events)

    def set_capacity(self, replica_id: str, blocks: int, block_size: int) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self._index.set_capacity(replica_id, blocks)
        self._sent.set_capacity(replica_id, blocks)  # the same index under approximate routing: idempotent
        self._block_size = int(block_size)

    def remove_replica(self, replica_id: str) -> None:
        self._index.remove_replica(replica_id)
        self._sent.remove_replica(replica_id)
        self._predicted.forget(replica_id)

    # ---- choice and dispatch ----
    def cached_tokens(self, replica_id: str, keys: Sequence[int], now: float) -> int:
        blocks = self._index.cached_blocks(replica_id, keys, now)
        if self._sent is not self._index:
            blocks = max(blocks, self._sent.cached_blocks(replica_id, keys, now))
        return blocks * self._block_size

    def _prompt_tokens(self, keys: Sequence[int], prompt_tokens: int | None) -> int:
        # Unknown: the keyed blocks' tokens (the prompt less its partial last block).
        return prompt_tokens if prompt_tokens else len(keys) * self._block_size

    def choose(self, loads: Sequence[ReplicaLoad], keys: Sequence[int], prompt_tokens: int | None,
               rng: random.Random, now: float) -> str | None:
        """Among `loads` (replicas with room), by cached prefix against load (`choose_cache_aware`)."""
        cached = {load.replica_id: self.cached_tokens(load.replica_id, keys, now) for load in loads}
        settings = self._settings
        return choose_cache_aware(loads, cached, self._prompt_tokens(keys, prompt_tokens), rng,
                                  cache_weight=settings.cache_weight, load_weight=settings.load_weight,
                                  affinity_load_bound=settings.affinity_load_bound)

    def record_dispatch(self, replica_id: str, class_name: str, keys: Sequence[int], prompt_tokens: int | None,
                        now: float) -> None:
        """Book the predicted hit of a request just sent, and record where it went."""
        prompt = self._prompt_tokens(keys, prompt_tokens)
        hit = min(self.cached_tokens(replica_id, keys, now), prompt) if keys else 0
        self._predicted.book(replica_id, class_name, hit, prompt)
        if keys:
            self._sent.record_dispatch(replica_id, keys, now)

    # ---- observability ----
    def add_stats(self, stats: dict[str, Any]) -> None:
        """Into the router core's stats: `predicted_prefix_hit_rate` per class and per replica (hit tokens /
        prompt tokens of dispatched requests, cumulative; None before any) and `prefix_index`'s size."""
        self._predicted.add_stats(stats, "predicted_prefix_hit_rate")
        index = {"indexed_blocks": self._index.indexed_blocks()}
        if self._events is not None:
            index["unkeyed_blocks"] = self._events.unkeyed_blocks  # stored blocks whose chain was lost
        stats["prefix_index"] = index
