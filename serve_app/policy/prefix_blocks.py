"""Keys of a prompt's full KV blocks, chained as vLLM chains its block hashes (each key covers the
whole prefix up to its block), so "first n keys equal" means "first n blocks' prefix equal".

Our own stable hash (blake2b), not vLLM's: every router process and the cache index must agree,
whatever hash function or seed an engine was started with.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

# The parent of a prompt's first block (vLLM's chains start from a seed likewise).
ROOT_KEY = 0


def chained_block_key(parent_key: int, block_tokens: Sequence[int]) -> int:
    """The key of one full block given its parent's key: a stable 64-bit hash of both."""
    data = parent_key.to_bytes(8, "big") + struct.pack(f"<{len(block_tokens)}q", *block_tokens)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def block_keys(token_ids: Sequence[int], block_size: int, parent_key: int = ROOT_KEY) -> tuple[int, ...]:
    """One chained key per full block of `token_ids`; a partial last block gets none (vLLM does not
    cache it). `parent_key` continues a chain (the key of the block before `token_ids[0]`)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    keys: list[int] = []
    key = parent_key
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        key = chained_block_key(key, token_ids[start:start + block_size])
        keys.append(key)
    return tuple(keys)
