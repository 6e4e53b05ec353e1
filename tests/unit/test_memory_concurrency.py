"""max_num_seqs / max_num_batched_tokens rules."""

import pytest

from serve_app.memory.concurrency import (
    max_num_batched_tokens_for_chunked_prefill,
    max_num_seqs_without_preemption,
)


def test_max_num_seqs_by_hand():
    # 134,880 tokens = 8430 blocks, minus the null block = 8429 usable.
    # p95 1536 + 512 = 2048 tokens = 128 blocks per sequence -> 8429 // 128 = 65
    assert max_num_seqs_without_preemption(134_880, 512, 1536, 256, 512, 16) == 65


def test_partial_block_rounds_up():
    # 100 + 30 = 130 tokens -> ceil(130/16) = 9 blocks; (1000 - 1) // 9 = 111
    assert max_num_seqs_without_preemption(16_000, 50, 100, 10, 30, 16) == 111
    # 128 tokens is exactly 8 blocks: 999 // 8 = 124
    assert max_num_seqs_without_preemption(16_000, 50, 98, 10, 30, 16) == 124


@pytest.mark.parametrize("p95_prompt", [256, 512, 1024, 2048, 4096])
def test_monotonic_in_prompt_length(p95_prompt):
    shorter = max_num_seqs_without_preemption(200_000, 100, p95_prompt, 100, 512)
    longer = max_num_seqs_without_preemption(200_000, 100, p95_prompt * 2, 100, 512)
    assert longer < shorter


@pytest.mark.parametrize("p95_output", [128, 512, 2048])
def test_monotonic_in_output_length_and_kv(p95_output):
    base = max_num_seqs_without_preemption(200_000, 100, 1024, 50, p95_output)
    assert max_num_seqs_without_preemption(200_000, 100, 1024, 50, p95_output * 2) < base
    assert max_num_seqs_without_preemption(400_000, 100, 1024, 50, p95_output) > base


def test_sequence_larger_than_cache_gives_zero():
    assert max_num_seqs_without_preemption(2048, 1000, 2048, 100, 200) == 0


def test_inconsistent_lengths_rejected():
    with pytest.raises(ValueError, match="prompt_len"):
        max_num_seqs_without_preemption(100_000, 900, 500, 10, 20)
    with pytest.raises(ValueError, match="output_len"):
        max_num_seqs_without_preemption(100_000, 100, 500, 0, 20)


def test_batched_tokens_rule_by_hand():
    # 64 decode tokens + 1536 prompt chunk = 1600 -> next multiple of 256 = 1792
    assert max_num_batched_tokens_for_chunked_prefill(64, 1536, 134_880) == 1792
    # chunk capped to 2048: 64 + 2048 = 2112 -> 2304
    assert max_num_batched_tokens_for_chunked_prefill(64, 4000, 134_880, prefill_chunk_cap=2048) == 2304


def test_batched_tokens_capped_by_kv_but_never_below_max_num_seqs():
    # 8 + 4000 -> 4096, but only 3000 KV tokens -> floor to 2816
    assert max_num_batched_tokens_for_chunked_prefill(8, 4000, 3000) == 2816
    assert max_num_batched_tokens_for_chunked_prefill(512, 100, 300) == 512


def test_batched_tokens_is_multiple_of_256_when_unconstrained():
    for seqs in (1, 37, 255, 300):
        out = max_num_batched_tokens_for_chunked_prefill(seqs, 777, 10**6)
        assert out % 256 == 0 and out >= seqs + 777
