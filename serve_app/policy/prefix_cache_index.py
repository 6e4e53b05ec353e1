"""Which replica holds which prompt blocks, by our chained block keys (`prefix_blocks.block_keys`).

Two ways to know, one query (`cached_blocks`: how many leading blocks of a prompt a replica holds):
- `PrefixCacheIndex` (precise): built from the replica's KV cache events (vLLM's BlockStored,
  BlockRemoved, AllBlocksCleared, converted by the caller into the plain events below).
- `DispatchedPrefixIndex` (approximate, for engines without events): what was sent where, kept in
  LRU order within the replica's cache capacity and for at most a TTL.
Both bound each replica's map by what its KV cache can hold, so memory stays flat whatever the traffic.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from serve_app.policy.prefix_blocks import ROOT_KEY, chained_block_key

# Blocks a replica is assumed to hold until `set_capacity` says (~130 k: an H200's KV cache for an
# 8B model at vLLM's block size 16 is ~50 k blocks, so this bounds memory without cutting real entries).
DEFAULT_CAPACITY_BLOCKS = 1 << 17
# The precise index keeps up to this share above capacity: it follows the engine's own removals and
# evicts by itself only when removals were missed.
PRECISE_MARGIN_FRACTION = 0.125


@dataclass(frozen=True)
class BlocksStored:
    """Blocks an engine just cached: `token_ids` holds `block_size` tokens per engine hash, in
    order; `parent_engine_hash` is the block before the first (None: the prompt's start)."""

    engine_hashes: Sequence[Hashable]
    parent_engine_hash: Hashable | None
    token_ids: Sequence[int]
    block_size: int


@dataclass(frozen=True)
class BlocksRemoved:
    """Blocks an engine evicted."""

    engine_hashes: Sequence[Hashable]


@dataclass(frozen=True)
class AllCleared:
    """The engine dropped its whole prefix cache (e.g. a reset)."""


CacheEvent = BlocksStored | BlocksRemoved | AllCleared


def held_prefix_length(keys: Sequence[int], held: Container[int]) -> int:
    """Leading `keys` in `held`, stopping at the first miss (a block is reusable only after its prefix)."""
    length = 0
    for key in keys:
        if key not in held:
            break
        length += 1
    return length


class PrefixIndex(Protocol):
    """What the router asks of either index."""

    def cached_blocks(self, replica_id: str, keys: Sequence[int], now: float | None = None) -> int: ...

    def set_capacity(self, replica_id: str, blocks: int) -> None: ...

    def remove_replica(self, replica_id: str) -> None: ...

    def indexed_blocks(self) -> int: ...


class _PerReplicaIndex:
    """Capacity bookkeeping and the per-replica maps both indexes share."""

    def __init__(self, default_capacity_blocks: int) -> None:
        if default_capacity_blocks < 1:
            raise ValueError(f"default_capacity_blocks must be >= 1, got {default_capacity_blocks}")
        self._default_capacity = default_capacity_blocks
        self._capacity: dict[str, int] = {}
        self._replicas: dict = {}  # replica id -> that index's map of its blocks

    def set_capacity(self, replica_id: str, blocks: int) -> None:
        """The replica's KV cache size in blocks (vLLM's num_gpu_blocks); shrinks its map at the next write."""
        if blocks < 1:
            raise ValueError(f"capacity must be >= 1 block, got {blocks}")
        self._capacity[replica_id] = int(blocks)

    def capacity(self, replica_id: str) -> int:
        return self._capacity.get(replica_id, self._default_capacity)

    def remove_replica(self, replica_id: str) -> None:
        self._capacity.pop(replica_id, None)
        self._replicas.pop(replica_id, None)

    def replica_ids(self) -> list[str]:
        return list(self._replicas)


@dataclass
class _EngineBlocks:
    key_of: OrderedDict = field(default_factory=OrderedDict)  # engine hash -> our key, oldest stored first
    holders: dict[int, int] = field(default_factory=dict)  # our key -> engine blocks with it (salts, LoRA)


class PrefixCacheIndex(_PerReplicaIndex):
    """Precise: each replica's cached blocks as its KV cache events report them."""

    def __init__(self, default_capacity_blocks: int = DEFAULT_CAPACITY_BLOCKS) -> None:
        super().__init__(default_capacity_blocks)
        self._replicas: dict[str, _EngineBlocks] = {}
        # Stored blocks whose chain we could not follow (a parent never seen: events missed).
        self.unkeyed_blocks = 0

    def apply(self, replica_id: str, events: Iterable[CacheEvent]) -> None:
        """Apply one replica's events in the order the engine emitted them."""
        blocks = self._replicas.get(replica_id)
        if blocks is None:
            blocks = self._replicas[replica_id] = _EngineBlocks()
        for event in events:
            if isinstance(event, BlocksStored):
                self._store(replica_id, blocks, event)
            elif isinstance(event, BlocksRemoved):
                for engine_hash in event.engine_hashes:
                    key = blocks.key_of.pop(engine_hash, None)
                    if key is not None:
                        self._release(blocks, key)
            elif isinstance(event, AllCleared):
                blocks.key_of.clear()
                blocks.holders.clear()
            else:
                raise TypeError(f"not a cache event: {event!r}")

    def _store(self, replica_id: str, blocks: _EngineBlocks, event: BlocksStored) -> None:
        if event.parent_engine_hash is None:
            key = ROOT_KEY
        else:
            key = blocks.key_of.get(event.parent_engine_hash)
            if key is None:
                self.unkeyed_blocks += len(event.engine_hashes)
                return
        size = event.block_size
        limit = self.capacity(replica_id) + max(1, int(PRECISE_MARGIN_FRACTION * self.capacity(replica_id)))
        for position, engine_hash in enumerate(event.engine_hashes):
            block_tokens = event.token_ids[position * size:(position + 1) * size]
            if len(block_tokens) < size:
                self.unkeyed_blocks += len(event.engine_hashes) - position
                return
            key = chained_block_key(key, block_tokens)
            replaced = blocks.key_of.pop(engine_hash, None)
            if replaced is not None:
                self._release(blocks, replaced)
            blocks.key_of[engine_hash] = key
            blocks.holders[key] = blocks.holders.get(key, 0) + 1
            while len(blocks.key_of) > limit:
                self._release(blocks, blocks.key_of.popitem(last=False)[1])

    @staticmethod
    def _release(blocks: _EngineBlocks, key: int) -> None:
        remaining = blocks.holders.get(key, 0) - 1
        if remaining > 0:
            blocks.holders[key] = remaining
        else:
            blocks.holders.pop(key, None)

    def cached_blocks(self, replica_id: str, keys: Sequence[int], now: float | None = None) -> int:
        """Leading blocks of `keys` the replica holds (`now` is unused: events say when blocks go)."""
        blocks = self._replicas.get(replica_id)
        return held_prefix_length(keys, blocks.holders) if blocks is not None else 0

    def indexed_blocks(self) -> int:
        return sum(len(blocks.key_of) for blocks in self._replicas.values())


class DispatchedPrefixIndex(_PerReplicaIndex):
    """Approximate: the blocks of prompts sent to each replica, assumed cached there until pushed out
    by newer ones (LRU, as vLLM evicts) beyond its capacity, or older than `ttl_s`."""

    def __init__(self, ttl_s: float, default_capacity_blocks: int = DEFAULT_CAPACITY_BLOCKS) -> None:
        super().__init__(default_capacity_blocks)
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self._ttl_s = ttl_s
        self._replicas: dict[str, OrderedDict[int, float]] = {}  # key -> last sent, least recent first

    def record_dispatch(self, replica_id: str, keys: Sequence[int], now: float) -> None:
        """The prompt with these block keys was sent to the replica at `now`."""
        sent = self._replicas.get(replica_id)
        if sent is None:
            sent = self._replicas[replica_id] = OrderedDict()
        for key in keys:
            sent[key] = now
            sent.move_to_end(key)
        capacity = self.capacity(replica_id)
        while len(sent) > capacity:
            sent.popitem(last=False)
        self._expire(sent, now)

    def _expire(self, sent: OrderedDict[int, float], now: float) -> None:
        # Least recent first, so the expired ones are all at the front.
        oldest_kept = now - self._ttl_s
        while sent and next(iter(sent.values())) < oldest_kept:
            sent.popitem(last=False)

    def cached_blocks(self, replica_id: str, keys: Sequence[int], now: float | None = None) -> int:
        """Leading blocks of `keys` sent to the replica (within the TTL of `now`, when given)."""
        sent = self._replicas.get(replica_id)
        if sent is None:
            return 0
        if now is not None:
            self._expire(sent, now)
        return held_prefix_length(keys, sent)

    def indexed_blocks(self) -> int:
        return sum(len(sent) for sent in self._replicas.values())
