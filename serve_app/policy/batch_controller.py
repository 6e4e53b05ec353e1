"""Batch-size decisions of the controller: engine args from the memory budget, reconciliation
with what vLLM allocated, and a per-replica window cap from observed lengths and preemptions.

Pure: the controller deployment (`serve_app/deployments/controller.py`) feeds it device facts
and replica reports.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

from serve_app.memory import ModelShape, compare_with_vllm, engine_args_for, plan_memory
from serve_app.memory.batch_profile import BatchProfile, choose_batch_size
from serve_app.memory.budget import Reconciliation
from serve_app.memory.concurrency import max_num_seqs_without_preemption
from serve_app.memory.estimates import kv_bytes_per_token
from serve_app.memory.presets import UseCasePreset
from serve_app.memory.speculation import NO_SPECULATION, SpeculationCost
from serve_app.speculative_settings import SpeculativeSettings
from serve_app.statistics import percentile_ceil

GiB = 1024**3
CPU_BLOCK_SIZE = 128  # vLLM's CPU backend pages the KV cache in blocks of 128 tokens
GPU_BLOCK_SIZE = 16


@dataclass(frozen=True)
class DeviceInfo:
    """What a replica knows about its own device at start (GPU types may differ per replica)."""

    kind: str  # "cuda" or "cpu"
    name: str
    total_bytes: int
    free_bytes: int
    # CPU only: the KV cache space vLLM is told to use (VLLM_CPU_KVCACHE_SPACE), bytes.
    cpu_kv_cache_bytes: int = 0


@dataclass(frozen=True)
class EnginePlan:
    engine_args: dict
    predicted_kv_tokens: int
    block_size: int


def preset_within_context(preset: UseCasePreset, max_model_len: int) -> UseCasePreset:
    """Scale a preset's lengths down proportionally when its p95 request exceeds the context."""
    if preset.p95_sequence_len <= max_model_len:
        return preset
    scale = max_model_len / preset.p95_sequence_len
    shrink = lambda n: max(1, math.floor(n * scale))  # noqa: E731
    prompt_p95, output_p95 = shrink(preset.prompt_len_p95), shrink(preset.output_len_p95)
    return replace(preset, prompt_len_p95=prompt_p95, output_len_p95=output_p95,
                   prompt_len_mean=min(preset.prompt_len_mean, prompt_p95),
                   output_len_mean=min(preset.output_len_mean, output_p95))


def plan_engine(shape: ModelShape, device: DeviceInfo, preset: UseCasePreset, *, max_model_len: int,
                gpu_memory_utilization: float, max_num_batched_tokens: int, kv_cache_dtype: str,
                speculation: SpeculationCost = NO_SPECULATION) -> EnginePlan:
    """Engine args (batch size, tokens per step) for one replica's device and the predicted KV tokens."""
    if speculation.uses_draft_model and speculation.draft is None:
        raise ValueError("engine.speculative: the draft model's config.json is needed to size its memory")
    preset = preset_within_context(preset, max_model_len)
    if device.kind == "cpu":
        # The CPU backend gets a fixed KV space instead of a share of device memory (draft weights aside).
        per_token = kv_bytes_per_token(shape, kv_cache_dtype) + speculation.draft_kv_bytes_per_token(kv_cache_dtype)
        kv_tokens = (device.cpu_kv_cache_bytes // (per_token * CPU_BLOCK_SIZE)) * CPU_BLOCK_SIZE
        seqs = max_num_seqs_without_preemption(kv_tokens, preset.prompt_len_mean, preset.prompt_len_p95,
                                               preset.output_len_mean, preset.output_len_p95, CPU_BLOCK_SIZE,
                                               extra_tokens_per_seq=speculation.extra_kv_tokens_per_sequence)
        seqs = max(1, min(seqs, preset.max_num_seqs_cap))
        step_tokens = seqs * speculation.tokens_per_decode_step
        args = {"max_num_seqs": seqs, "max_num_batched_tokens": max(max_num_batched_tokens, step_tokens)}
        return EnginePlan(args, kv_tokens, CPU_BLOCK_SIZE)
    budget = plan_memory(shape, device.total_bytes, gpu_memory_utilization, max_model_len,
                         max_num_batched_tokens, kv_cache_dtype=kv_cache_dtype, block_size=GPU_BLOCK_SIZE,
                         speculation=speculation)
    args = engine_args_for(budget, preset)
    return EnginePlan({"max_num_seqs": args["max_num_seqs"], "max_num_batched_tokens": args["max_num_batched_tokens"]},
                      budget.kv_tokens, GPU_BLOCK_SIZE)


def speculation_cost(settings: SpeculativeSettings | None, draft_hf_config: dict | None = None) -> SpeculationCost:
    """What `engine.speculative` costs (nothing when off). Without the draft's config.json only the
    token terms are known, which is all a window cap needs."""
    if settings is None:
        return NO_SPECULATION
    draft = ModelShape.from_hf_config(draft_hf_config) if draft_hf_config is not None else None
    return SpeculationCost(settings.num_speculative_tokens, settings.uses_draft_model, draft)


def reconcile(predicted_tokens: int, reported_blocks: int, block_size: int) -> Reconciliation:
    return compare_with_vllm(predicted_tokens, reported_blocks, block_size)


class LengthWindow:
    """The last `size` finished requests' prompt and output lengths."""

    def __init__(self, size: int = 512):
        self._prompts: deque[int] = deque(maxlen=size)
        self._outputs: deque[int] = deque(maxlen=size)

    def observe(self, prompt_len: int, output_len: int) -> None:
        self._prompts.append(max(1, prompt_len))
        self._outputs.append(max(1, output_len))

    def __len__(self) -> int:
        return len(self._prompts)

    def prompt_p95(self) -> int | None:
        """`serve_app.statistics.percentile_ceil` of the prompt lengths; None before any request."""
        return percentile_ceil(self._prompts, 95)

    def output_p95(self) -> int | None:
        return percentile_ceil(self._outputs, 95)


@dataclass
class WindowCapState:
    cap: int
    preemptions_seen: int = 0


def next_window_cap(state: WindowCapState, *, kv_tokens: int, block_size: int, lengths: LengthWindow,
                    preemptions_total: int, max_num_seqs: int, min_samples: int = 16,
                    shrink: float = 0.8, extra_kv_tokens_per_seq: int = 0) -> WindowCapState:
    """How many requests the router may keep in flight on a replica without KV preemption.

    Sized from the observed p95 lengths once there are enough samples; a replica that still
    preempted since the last report gets its cap cut by `shrink`. Never above max_num_seqs.
    `extra_kv_tokens_per_seq`: what speculative decoding holds per sequence
    (`SpeculationCost.extra_kv_tokens_per_sequence`).
    """
    cap = state.cap
    if len(lengths) >= min_samples:
        prompt_p95, output_p95 = lengths.prompt_p95(), lengths.output_p95()
        cap = max_num_seqs_without_preemption(kv_tokens, prompt_p95, prompt_p95, output_p95, output_p95, block_size,
                                              extra_tokens_per_seq=extra_kv_tokens_per_seq)
    if preemptions_total > state.preemptions_seen:
        cap = min(cap, math.floor(state.cap * shrink))
    return WindowCapState(cap=max(1, min(cap, max_num_seqs)), preemptions_seen=preemptions_total)


def apply_profile(plan: EnginePlan, profile: BatchProfile, preset: UseCasePreset) -> EnginePlan:
    """The memory plan with max_num_seqs cut to the largest measured batch meeting the preset's SLO."""
    memory_cap = plan.engine_args["max_num_seqs"]
    seqs = choose_batch_size(profile, preset.ttft_s, preset.tpot_s, memory_cap)
    return replace(plan, engine_args={**plan.engine_args, "max_num_seqs": seqs})
