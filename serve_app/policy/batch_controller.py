"""Batch-size decisions of the controller: engine args from the memory budget, reconciliation
with what vLLM allocated, and a per-replica window cap from observed lengths, preemptions and KV usage.

Pure: the controller deployment (`serve_app/deployments/controller.py`) feeds it device facts
and replica reports.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace
from typing import Literal

from serve_app.memory import ModelShape, compare_with_vllm, engine_args_for, plan_memory
from serve_app.memory.batch_profile import BatchProfile, choose_batch_size
from serve_app.memory.budget import Reconciliation
from serve_app.memory.concurrency import max_num_seqs_without_preemption
from serve_app.memory.estimates import kv_bytes_per_token
from serve_app.memory.occupancy import (OVERFLOW_PROBABILITY, FootprintMoments, KvSizing,
                                        max_concurrency_at_overflow, planned_max_num_seqs)
from serve_app.memory.plan_table import max_num_seqs_ceiling
from serve_app.memory.presets import UseCasePreset
from serve_app.memory.speculation import NO_SPECULATION, SpeculationCost
from serve_app.speculative_settings import SpeculativeSettings
from serve_app.statistics import percentile_ceil

GiB = 1024**3
CPU_BLOCK_SIZE = 128  # vLLM's CPU backend pages the KV cache in blocks of 128 tokens
# vLLM's OpenAI server's own max_num_seqs on its CPU backend: the most a CPU replica runs at once when
# no preset caps it (a GPU replica's ceiling is the 1,024 sampler rows plan_memory sizes activation for).
CPU_MAX_NUM_SEQS = 128
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
    kv_sizing: KvSizing = "worst_case"
    # The router's first window cap when it is not the engine's max_num_seqs (`engine_at_ceiling`).
    window_cap_start: int | None = None

    @property
    def first_window_cap(self) -> int:
        return self.window_cap_start or self.engine_args["max_num_seqs"]


def preset_within_context(preset: UseCasePreset, max_model_len: int) -> UseCasePreset:
    """Scale a preset's lengths down proportionally when its p95 request exceeds the context."""
    if preset.p95_sequence_len <= max_model_len:
        return preset
    # Means shrink by the same factor as the p95s: the shape of the distribution (its p95/mean) is kept,
    # which occupancy sizing and the load driver's preset workloads read, instead of collapsing to fixed lengths.
    scale = max_model_len / preset.p95_sequence_len
    shrink = lambda n: max(1, math.floor(n * scale))  # noqa: E731
    prompt_p95, output_p95 = shrink(preset.prompt_len_p95), shrink(preset.output_len_p95)
    return replace(preset, prompt_len_p95=prompt_p95, output_len_p95=output_p95,
                   prompt_len_mean=min(shrink(preset.prompt_len_mean), prompt_p95),
                   output_len_mean=min(shrink(preset.output_len_mean), output_p95))


def plan_engine(shape: ModelShape, device: DeviceInfo, preset: UseCasePreset, *, max_model_len: int,
                gpu_memory_utilization: float, max_num_batched_tokens: int, kv_cache_dtype: str,
                speculation: SpeculationCost = NO_SPECULATION, kv_sizing: KvSizing = "worst_case",
                engine_at_ceiling: bool = False) -> EnginePlan:
    """Engine args (batch size, tokens per step) for one replica's device and the predicted KV tokens;
    `kv_sizing` chooses how max_num_seqs is sized (`serve_app.memory.occupancy`). With `engine_at_ceiling`
    the engine gets the most sequences its memory plan allows and the KV-sized figure becomes the router's
    first window cap instead: on an H200 every preset measured so far met its SLO for more requests with
    more sequences, up to vLLM's 1,024 (runs 2-3), and a cap in the engine cannot follow the load without
    a restart, while the window cap follows measured KV usage and preemptions (`next_window_cap`)."""
    if speculation.uses_draft_model and speculation.draft is None:
        raise ValueError("engine.speculative: the draft model's config.json is needed to size its memory")
    preset = preset_within_context(preset, max_model_len)
    if device.kind == "cpu":
        # The CPU backend gets a fixed KV space instead of a share of device memory (draft weights aside).
        per_token = kv_bytes_per_token(shape, kv_cache_dtype) + speculation.draft_kv_bytes_per_token(kv_cache_dtype)
        kv_tokens = (device.cpu_kv_cache_bytes // (per_token * CPU_BLOCK_SIZE)) * CPU_BLOCK_SIZE
        ceiling = preset.max_num_seqs_cap or CPU_MAX_NUM_SEQS
        sized = max(1, min(ceiling, planned_max_num_seqs(kv_tokens, CPU_BLOCK_SIZE, preset, kv_sizing,
                                                         extra_tokens_per_seq=speculation.extra_kv_tokens_per_sequence)))
        seqs = ceiling if engine_at_ceiling else sized
        step_tokens = seqs * speculation.tokens_per_decode_step
        args = {"max_num_seqs": seqs, "max_num_batched_tokens": max(max_num_batched_tokens, step_tokens)}
        return EnginePlan(args, kv_tokens, CPU_BLOCK_SIZE, kv_sizing, sized if engine_at_ceiling else None)
    budget = plan_memory(shape, device.total_bytes, gpu_memory_utilization, max_model_len,
                         max_num_batched_tokens, kv_cache_dtype=kv_cache_dtype, block_size=GPU_BLOCK_SIZE,
                         speculation=speculation)
    args = engine_args_for(budget, preset, kv_sizing)
    sized = args["max_num_seqs"]
    seqs = max_num_seqs_ceiling(budget, preset) if engine_at_ceiling else sized
    return EnginePlan({"max_num_seqs": seqs, "max_num_batched_tokens": args["max_num_batched_tokens"]},
                      budget.kv_tokens, GPU_BLOCK_SIZE, kv_sizing, sized if engine_at_ceiling else None)


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
    """The last `size` finished requests' (prompt, output) lengths, kept as pairs so that a request's
    KV footprint comes from its own two lengths."""

    def __init__(self, size: int = 512):
        self._pairs: deque[tuple[int, int]] = deque(maxlen=size)

    def observe(self, prompt_len: int, output_len: int) -> None:
        self._pairs.append((max(1, prompt_len), max(1, output_len)))

    def __len__(self) -> int:
        return len(self._pairs)

    def pairs(self) -> tuple[tuple[int, int], ...]:
        return tuple(self._pairs)

    def prompt_p95(self) -> int | None:
        """`serve_app.statistics.percentile_ceil` of the prompt lengths; None before any request."""
        return percentile_ceil((prompt for prompt, _ in self._pairs), 95)

    def output_p95(self) -> int | None:
        return percentile_ceil((output for _, output in self._pairs), 95)


WindowCapReason = Literal["shrink", "grow", "hold", "clamp"]


@dataclass
class WindowCapState:
    """`reason`: what the last report did to the cap: `shrink` (a preemption), `grow` (headroom),
    `hold`, or `clamp` (brought down to the occupancy figure of the observed lengths)."""

    cap: int
    preemptions_seen: int = 0
    reason: WindowCapReason = "hold"


KV_USAGE_HIGH_WATER = 0.9  # vLLM's kv_cache_usage at or above which the window stops growing


def observed_occupancy_cap(kv_tokens: int, block_size: int, lengths: LengthWindow,
                           extra_kv_tokens_per_seq: int = 0) -> int:
    """Requests in flight that overflow the KV cache with `OVERFLOW_PROBABILITY` at the observed
    lengths; never below the p95 x p95 figure."""
    prompt_p95, output_p95 = lengths.prompt_p95(), lengths.output_p95()
    worst = max_num_seqs_without_preemption(kv_tokens, prompt_p95, prompt_p95, output_p95, output_p95, block_size,
                                            extra_tokens_per_seq=extra_kv_tokens_per_seq)
    moments = FootprintMoments.from_requests(lengths.pairs(), block_size, extra_kv_tokens_per_seq)
    return max_concurrency_at_overflow(kv_tokens, block_size, moments, OVERFLOW_PROBABILITY, worst_case=worst)


def next_window_cap(state: WindowCapState, *, kv_tokens: int, block_size: int, lengths: LengthWindow,
                    preemptions_total: int, max_num_seqs: int, kv_cache_usage: float | None = None,
                    min_samples: int = 16, shrink: float = 0.8, grow_fraction: float = 0.05,
                    high_water: float = KV_USAGE_HIGH_WATER, extra_kv_tokens_per_seq: int = 0) -> WindowCapState:
    """How many requests the router may keep in flight on a replica: AIMD on its load reports.

    A preemption since the last report cuts the cap by `shrink`. Otherwise, once `min_samples` lengths
    are known and the replica's KV usage (0..1) is below `high_water`, the cap grows by `grow_fraction`
    of the occupancy figure of the observed lengths (`observed_occupancy_cap`), up to max_num_seqs: the
    measured room in the cache outranks the model, which sized 649 sequences for the mixed preset on an
    H200 where vLLM ran 826-885 at 99.9% of its cache. With the cache at or above `high_water`, or its
    usage not reported, the cap is held to the occupancy figure. Never above max_num_seqs.
    `extra_kv_tokens_per_seq`: what speculative decoding holds per sequence
    (`SpeculationCost.extra_kv_tokens_per_sequence`).
    """
    if kv_cache_usage is not None and not 0 <= kv_cache_usage <= 1:
        raise ValueError(f"kv_cache_usage must be in [0, 1], got {kv_cache_usage}")
    occupancy = (observed_occupancy_cap(kv_tokens, block_size, lengths, extra_kv_tokens_per_seq)
                 if len(lengths) >= min_samples else None)
    room = kv_cache_usage is not None and kv_cache_usage < high_water
    ceiling = max_num_seqs if room or occupancy is None else min(max_num_seqs, occupancy)
    preempted = preemptions_total > state.preemptions_seen
    cap = state.cap
    if preempted:
        cap = math.floor(cap * shrink)
    elif occupancy is not None and room:
        cap += max(1, math.ceil(occupancy * grow_fraction))
    cap = max(1, min(cap, ceiling))
    reason: WindowCapReason = ("shrink" if preempted else "grow" if cap > state.cap
                               else "clamp" if cap < state.cap else "hold")
    return WindowCapState(cap=cap, preemptions_seen=preemptions_total, reason=reason)


def apply_profile(plan: EnginePlan, profile: BatchProfile, preset: UseCasePreset) -> EnginePlan:
    """The memory plan with max_num_seqs cut to the largest measured batch meeting the preset's SLO."""
    memory_cap = plan.engine_args["max_num_seqs"]
    seqs = choose_batch_size(profile, preset.ttft_s, preset.tpot_s, memory_cap)
    start = min(plan.window_cap_start, seqs) if plan.window_cap_start is not None else None
    return replace(plan, engine_args={**plan.engine_args, "max_num_seqs": seqs}, window_cap_start=start)
