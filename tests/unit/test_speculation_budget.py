"""Speculative decoding in the memory budget: a draft's weights and KV, the drafts' KV slots per
sequence, and the drafts verified in every decode step."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest

from serve_app.memory import ModelShape, engine_args_for, get_preset, plan_memory
from serve_app.memory.budget import weight_bytes
from serve_app.memory.concurrency import max_num_seqs_without_preemption
from serve_app.memory.gpus import gpu_memory_bytes
from serve_app.memory.speculation import NO_SPECULATION, SpeculationCost
from serve_app.policy.batch_controller import (DeviceInfo, LengthWindow, WindowCapState, next_window_cap,
                                               plan_engine, speculation_cost)
from serve_app.speculative_settings import SpeculativeSettings
from serve_app.synthetic_model import SHAPES, hf_config

GiB = 1 << 30
H200 = gpu_memory_bytes("H200")


def shape(name: str) -> ModelShape:
    return ModelShape.from_hf_config(hf_config(SHAPES[name]))


def plan(speculation: SpeculationCost = NO_SPECULATION, max_num_batched_tokens: int = 8192):
    return plan_memory(shape("llama2-7b"), H200, 0.9, 4096, max_num_batched_tokens, speculation=speculation)


def test_ngram_costs_no_memory():
    assert plan(SpeculationCost(3)).kv_tokens == plan().kv_tokens
    assert plan(SpeculationCost(3)).draft_weights == 0


def test_a_draft_models_weights_and_kv_come_out_of_the_kv_cache():
    draft = shape("llama2-7b-draft")
    base, with_draft = plan(), plan(SpeculationCost(4, uses_draft_model=True, draft=draft))
    # Two fp16 32000 x 256 tables (embeddings, lm_head) at least.
    assert with_draft.draft_weights == weight_bytes(draft).total > 2 * 32000 * 256 * 2
    assert with_draft.kv_cache_bytes == base.kv_cache_bytes - with_draft.draft_weights
    # Target: 32 layers x 32 KV heads x 128 x (K, V) x 2 B; draft: 2 layers x 2 KV heads x 64 x (K, V) x 2 B.
    assert with_draft.kv_bytes_per_token == 32 * 32 * 128 * 2 * 2 + 2 * 2 * 64 * 2 * 2
    assert with_draft.kv_tokens == with_draft.kv_cache_bytes // (with_draft.kv_bytes_per_token * 16) * 16
    assert with_draft.kv_tokens < base.kv_tokens


def test_drafts_hold_kv_slots_per_sequence():
    assert SpeculationCost(3).extra_kv_tokens_per_sequence == 3  # the drafts being verified
    assert SpeculationCost(3, uses_draft_model=True).extra_kv_tokens_per_sequence == 6  # + the draft's lookahead
    assert NO_SPECULATION.extra_kv_tokens_per_sequence == 0
    # 100 + 30 (+14) tokens fit 9 blocks of 16, one more token needs 10: 999 usable blocks // 9 or // 10.
    assert max_num_seqs_without_preemption(16_000, 50, 100, 10, 30, 16, extra_tokens_per_seq=14) == 111
    assert max_num_seqs_without_preemption(16_000, 50, 100, 10, 30, 16, extra_tokens_per_seq=15) == 99


def test_every_decode_step_verifies_the_drafts_in_the_step_budget():
    preset = get_preset("interactive")  # p95 prompt 1536 + p95 output 512 = 128 blocks of 16
    budget = plan()
    usable_blocks = budget.kv_tokens // 16 - 1
    plain, ngram = engine_args_for(budget, preset), engine_args_for(plan(SpeculationCost(3)), preset)
    # The KV cache bounds the batch; 3 draft slots need a 129th block.
    assert plain["max_num_seqs"] == usable_blocks // 128 == 121
    assert ngram["max_num_seqs"] == usable_blocks // 129 == 120
    assert plain["max_num_batched_tokens"] == ngram["max_num_batched_tokens"] == budget.max_num_batched_tokens
    assert ngram["max_num_seqs"] * 4 <= ngram["max_num_batched_tokens"]
    # A preset's chunk cap makes the step one decode with its drafts per sequence plus the chunk.
    chunked = replace(preset, prefill_chunk_cap=1024)
    assert engine_args_for(plan(SpeculationCost(3)), chunked)["max_num_batched_tokens"] \
        == math.ceil((120 * 4 + 1024) / 256) * 256 == 1536


def test_a_small_step_budget_runs_fewer_sequences_with_their_drafts():
    preset = get_preset("interactive")
    assert engine_args_for(plan(max_num_batched_tokens=256), preset)["max_num_seqs"] == 121
    assert engine_args_for(plan(SpeculationCost(3), max_num_batched_tokens=256), preset)["max_num_seqs"] == 256 // 4


def test_cpu_plan_counts_draft_kv_and_step_tokens():
    device = DeviceInfo("cpu", "cpu", 0, 0, 1 * GiB)
    common = dict(max_model_len=512, gpu_memory_utilization=0.9, max_num_batched_tokens=256, kv_cache_dtype="auto")
    preset = get_preset("interactive")
    plain = plan_engine(shape("tiny"), device, preset, **common)
    ngram = plan_engine(shape("tiny"), device, preset, speculation=SpeculationCost(3), **common)
    tiny_draft = plan_engine(shape("tiny"), device, preset, **common,
                             speculation=SpeculationCost(3, uses_draft_model=True, draft=shape("tiny")))
    assert plain.predicted_kv_tokens == ngram.predicted_kv_tokens == 1_048_576  # 1 GiB / 1,024 B per token
    assert tiny_draft.predicted_kv_tokens == 1_048_576 // 2  # the draft doubles each token's KV
    assert plain.engine_args["max_num_batched_tokens"] == 256
    assert ngram.engine_args["max_num_batched_tokens"] == 128 * 4  # 128 sequences with 1 + 3 tokens each


def test_a_draft_model_plan_needs_the_drafts_shape():
    with pytest.raises(ValueError, match="draft model's config.json"):
        plan_engine(shape("tiny"), DeviceInfo("cpu", "cpu", 0, 0, GiB), get_preset("interactive"),
                    max_model_len=512, gpu_memory_utilization=0.9, max_num_batched_tokens=256,
                    kv_cache_dtype="auto", speculation=SpeculationCost(3, uses_draft_model=True))


def test_speculation_cost_from_the_settings():
    assert speculation_cost(None) is NO_SPECULATION
    ngram = SpeculativeSettings(method="ngram", num_speculative_tokens=3)
    assert speculation_cost(ngram) == SpeculationCost(3)
    draft = SpeculativeSettings(method="draft_model", num_speculative_tokens=2, synthetic_shape="tiny")
    assert speculation_cost(draft, hf_config(SHAPES["tiny"])) == SpeculationCost(2, True, shape("tiny"))
    assert speculation_cost(draft).extra_kv_tokens_per_sequence == 4


def test_window_cap_leaves_room_for_the_drafts():
    window = LengthWindow(size=64)
    for _ in range(19):
        window.observe(100, 20)
    window.observe(1000, 500)
    common = dict(kv_tokens=16 * 1001, block_size=16, lengths=window, preemptions_total=0, max_num_seqs=256)
    # p95 145 + 44 = 189 tokens: 12 blocks of 16 hold 3 more, a 4th needs a 13th block.
    assert next_window_cap(WindowCapState(cap=256), **common, extra_kv_tokens_per_seq=3).cap == 1000 // 12
    assert next_window_cap(WindowCapState(cap=256), **common, extra_kv_tokens_per_seq=4).cap == 1000 // 13


def test_nonsense_costs_are_refused():
    with pytest.raises(ValueError):
        SpeculationCost(-1)
    with pytest.raises(ValueError):
        SpeculationCost(0, uses_draft_model=True)
    with pytest.raises(ValueError):
        SpeculationCost(2, uses_draft_model=False, draft=shape("tiny"))
