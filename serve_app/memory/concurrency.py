"""Scheduler limits (max_num_seqs, max_num_batched_tokens) derived from KV capacity."""

from __future__ import annotations

import math

TOKEN_BUDGET_MULTIPLE = 256


def _check_lengths(name: str, mean: float, p95: int) -> None:
    if mean <= 0 or p95 <= 0 or mean > p95:
        raise ValueError(f"{name}: need 0 < mean <= p95, got mean={mean} p95={p95}")


def max_num_seqs_without_preemption(
    kv_tokens: int,
    prompt_len_mean: float,
    prompt_len_p95: int,
    output_len_mean: float,
    output_len_p95: int,
    block_size: int = 16,
    extra_tokens_per_seq: int = 0,
) -> int:
    """Most concurrent sequences that fit if every one grows to p95 prompt + p95 output
    (+ `extra_tokens_per_seq`: KV slots speculative decoding holds per sequence).

    Means only sanity-check the inputs (a mean above its p95 is a mis-described workload).
    """
    # vLLM allocates blocks lazily and preempts when a running request cannot get
    # its next block, so sizing at means would preempt whenever a batch skews
    # long; budgeting every sequence at p95 is the safety margin.
    _check_lengths("prompt_len", prompt_len_mean, prompt_len_p95)
    _check_lengths("output_len", output_len_mean, output_len_p95)
    if block_size <= 0 or kv_tokens < 0 or extra_tokens_per_seq < 0:
        raise ValueError("block_size must be positive, kv_tokens and extra_tokens_per_seq non-negative")
    blocks_per_seq = math.ceil((prompt_len_p95 + output_len_p95 + extra_tokens_per_seq) / block_size)
    return usable_kv_blocks(kv_tokens, block_size) // blocks_per_seq


def usable_kv_blocks(kv_tokens: int, block_size: int) -> int:
    """Blocks that sequences can hold: BlockPool keeps one null block out of circulation
    (vllm/v1/core/block_pool.py)."""
    return max(kv_tokens // block_size - 1, 0)


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def max_num_batched_tokens_for_chunked_prefill(
    max_num_seqs: int,
    prompt_len_p95: int,
    kv_tokens: int,
    prefill_chunk_cap: int | None = None,
    multiple: int = TOKEN_BUDGET_MULTIPLE,
    tokens_per_decode_step: int = 1,
) -> int:
    """Per-step token budget: `tokens_per_decode_step` per running sequence (1, or 1 + the drafts
    speculative decoding verifies) plus one prefill chunk.

    The chunk is the p95 prompt (so most prompts prefill in one step, bounding
    TTFT) unless ``prefill_chunk_cap`` limits it to protect TPOT. Rounded up to
    ``multiple``, never below max_num_seqs (vLLM rejects that), capped by KV tokens.
    """
    if max_num_seqs <= 0 or prompt_len_p95 <= 0 or multiple <= 0 or tokens_per_decode_step <= 0:
        raise ValueError("max_num_seqs, prompt_len_p95, multiple and tokens_per_decode_step must be positive")
    chunk = prompt_len_p95 if prefill_chunk_cap is None else min(prompt_len_p95, prefill_chunk_cap)
    budget = _round_up(max_num_seqs * tokens_per_decode_step + chunk, multiple)
    kv_cap = kv_tokens // multiple * multiple
    return max(min(budget, kv_cap), max_num_seqs)
