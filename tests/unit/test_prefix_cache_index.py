"""Prefix cache indexes: precise (from fake KV cache events) and approximate (from dispatches, fake clock)."""
import pytest

from serve_app.policy.prefix_blocks import block_keys
from serve_app.policy.prefix_cache_index import (AllCleared, BlocksRemoved, BlocksStored, DispatchedPrefixIndex,
                                                 PrefixCacheIndex)

BLOCK = 4
PROMPT = list(range(100, 124))  # six blocks
KEYS = block_keys(PROMPT, BLOCK)


def stored(first_block: int, count: int, parent: str | None = "auto", tokens=PROMPT) -> BlocksStored:
    """The engine caching blocks first_block.. of `tokens`, its hashes named "h<i>" (not our keys)."""
    if parent == "auto":
        parent = f"h{first_block - 1}" if first_block else None
    return BlocksStored([f"h{i}" for i in range(first_block, first_block + count)], parent,
                        tokens[first_block * BLOCK:(first_block + count) * BLOCK], BLOCK)


# ---- precise ---------------------------------------------------------------------------------------
def test_stored_blocks_are_found_by_our_keys_up_to_the_first_miss():
    index = PrefixCacheIndex()
    index.apply("r1", [stored(0, 3)])
    assert index.cached_blocks("r1", KEYS) == 3
    assert index.cached_blocks("r2", KEYS) == 0
    index.apply("r1", [stored(3, 2)])  # continues the chain through the parent's engine hash
    assert index.cached_blocks("r1", KEYS) == 5
    other = block_keys([7] * 4 + PROMPT[4:], BLOCK)
    assert index.cached_blocks("r1", other) == 0  # first block differs: nothing after it is reusable


def test_removed_blocks_stop_counting_and_cut_the_prefix_there():
    index = PrefixCacheIndex()
    index.apply("r1", [stored(0, 4)])
    index.apply("r1", [BlocksRemoved(["h1"])])
    assert index.cached_blocks("r1", KEYS) == 1
    assert index.indexed_blocks() == 3
    index.apply("r1", [BlocksRemoved(["h0", "unknown"])])
    assert index.cached_blocks("r1", KEYS) == 0


def test_a_parent_never_seen_leaves_its_chain_unkeyed():
    index = PrefixCacheIndex()
    index.apply("r1", [stored(2, 3)])  # events for blocks 0-1 were missed
    assert index.unkeyed_blocks == 3
    assert index.indexed_blocks() == 0
    index.apply("r1", [stored(5, 1)])  # its parent was one of the unkeyed blocks
    assert index.unkeyed_blocks == 4
    assert index.cached_blocks("r1", KEYS) == 0


def test_a_short_event_keys_only_its_full_blocks():
    index = PrefixCacheIndex()
    index.apply("r1", [BlocksStored(["h0", "h1"], None, PROMPT[:6], BLOCK)])
    assert index.cached_blocks("r1", KEYS) == 1
    assert index.unkeyed_blocks == 1


def test_all_cleared_empties_only_that_replica():
    index = PrefixCacheIndex()
    index.apply("r1", [stored(0, 2)])
    index.apply("r2", [stored(0, 2)])
    index.apply("r1", [AllCleared()])
    assert index.cached_blocks("r1", KEYS) == 0
    assert index.cached_blocks("r2", KEYS) == 2


def test_two_engine_blocks_with_the_same_tokens_share_a_key_until_both_are_gone():
    # e.g. the same text under two cache salts: the engine hashes differ, our key does not.
    index = PrefixCacheIndex()
    index.apply("r1", [stored(0, 1), BlocksStored(["salted"], None, PROMPT[:BLOCK], BLOCK)])
    index.apply("r1", [BlocksRemoved(["h0"])])
    assert index.cached_blocks("r1", KEYS) == 1
    index.apply("r1", [BlocksRemoved(["salted"])])
    assert index.cached_blocks("r1", KEYS) == 0


def test_remove_replica_forgets_it():
    index = PrefixCacheIndex()
    index.apply("r1", [stored(0, 2)])
    index.remove_replica("r1")
    assert index.cached_blocks("r1", KEYS) == 0 and index.indexed_blocks() == 0 and index.replica_ids() == []


def test_missed_removals_cannot_grow_a_replica_past_its_capacity_and_margin():
    index = PrefixCacheIndex()
    index.set_capacity("r1", 16)
    tokens = list(range(4 * 200))
    index.apply("r1", [BlocksStored([f"h{i}" for i in range(200)], None, tokens, BLOCK)])
    assert 16 <= index.indexed_blocks() <= 18  # 16 + 12.5 % margin
    keys = block_keys(tokens, BLOCK)
    # The oldest stored went first, so the prompt's start is gone (nothing reusable after it).
    assert index.cached_blocks("r1", keys) == 0
    assert index.cached_blocks("r1", keys[-1:]) == 1  # the newest is kept


def test_events_must_be_ours():
    with pytest.raises(TypeError):
        PrefixCacheIndex().apply("r1", ["BlockStored"])


# ---- approximate -----------------------------------------------------------------------------------
def test_dispatched_prompts_count_as_cached_on_that_replica():
    index = DispatchedPrefixIndex(ttl_s=60)
    index.record_dispatch("r1", KEYS[:4], now=0.0)
    assert index.cached_blocks("r1", KEYS, now=1.0) == 4
    assert index.cached_blocks("r2", KEYS, now=1.0) == 0


def test_entries_older_than_the_ttl_are_forgotten():
    index = DispatchedPrefixIndex(ttl_s=10)
    index.record_dispatch("r1", KEYS[:2], now=0.0)
    index.record_dispatch("r1", KEYS[:4], now=5.0)  # refreshes the first two
    assert index.cached_blocks("r1", KEYS, now=14.0) == 4
    assert index.cached_blocks("r1", KEYS, now=15.5) == 0
    assert index.indexed_blocks() == 0  # expired entries are dropped, not just skipped


def test_capacity_keeps_the_most_recently_sent_blocks():
    index = DispatchedPrefixIndex(ttl_s=1000)
    index.set_capacity("r1", 4)
    old = block_keys([1] * 16, BLOCK)
    index.record_dispatch("r1", old, now=0.0)
    index.record_dispatch("r1", KEYS[:2], now=1.0)
    assert index.cached_blocks("r1", KEYS, now=2.0) == 2
    assert index.cached_blocks("r1", old, now=2.0) == 0  # its first two blocks were least recent
    assert index.indexed_blocks() == 4
    index.record_dispatch("r1", old[:2], now=3.0)  # sent again: most recent now
    assert index.cached_blocks("r1", old, now=3.0) == 2
    assert index.cached_blocks("r1", KEYS, now=3.0) == 2


def test_approximate_remove_replica_and_bad_settings():
    index = DispatchedPrefixIndex(ttl_s=1)
    index.record_dispatch("r1", KEYS, now=0.0)
    index.remove_replica("r1")
    assert index.cached_blocks("r1", KEYS, now=0.0) == 0
    with pytest.raises(ValueError):
        DispatchedPrefixIndex(ttl_s=0)
    with pytest.raises(ValueError):
        index.set_capacity("r1", 0)
