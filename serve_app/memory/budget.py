"""GPU memory plan for one vLLM worker: what is left for KV cache and how many tokens fit."""

# Mirrors vLLM v1 (installed 0.32.0): vllm/v1/worker/utils.py request_memory
# (ceil(total * util)), vllm/v1/worker/gpu_worker.py determine_available_memory
# (requested - non-KV - CUDA-graph estimate) and vllm/v1/core/kv_cache_utils.py
# get_kv_cache_config_from_groups (num_blocks = available // bytes_per_block).

from __future__ import annotations

import math
from dataclasses import dataclass

from serve_app.memory.concurrency import (
    max_num_batched_tokens_for_chunked_prefill,
    max_num_seqs_without_preemption,
)
from serve_app.memory.estimates import (
    LOADED_WEIGHTS_OVERHEAD_BYTES,
    GiB,
    WeightBreakdown,
    activation_bytes,
    cuda_graph_bytes,
    kv_bytes_per_token,
    weight_bytes,
)
from serve_app.memory.shape import AwqConfig, ModelShape
from serve_app.memory.speculation import NO_SPECULATION, SpeculationCost

__all__ = [
    "AwqConfig",
    "MeasuredOverheads",
    "MemoryBudget",
    "ModelShape",
    "Reconciliation",
    "SpeculationCost",
    "WeightBreakdown",
    "activation_bytes",
    "compare_with_vllm",
    "cuda_graph_bytes",
    "kv_bytes_per_token",
    "max_num_batched_tokens_for_chunked_prefill",
    "max_num_seqs_without_preemption",
    "plan_memory",
    "weight_bytes",
]

# Non-torch memory (CUDA context, cuBLAS/NCCL workspaces) vLLM reported for a
# single-GPU Llama-2-7B AWQ worker on H100; grows with tensor parallelism.
DEFAULT_NON_TORCH_BYTES = int(0.22 * GiB)


@dataclass(frozen=True)
class MeasuredOverheads:
    """Figures from a real vLLM startup log; any left as None is estimated."""

    weights: int | None = None
    activation: int | None = None
    non_torch: int | None = None
    cuda_graph: int | None = None

    @classmethod
    def from_gib(cls, weights: float | None = None, activation: float | None = None,
                 non_torch: float | None = None, cuda_graph: float | None = None) -> MeasuredOverheads:
        """Build from the GiB values vLLM prints (rounded to bytes)."""
        def conv(x: float | None) -> int | None:
            return None if x is None else round(x * GiB)
        return cls(conv(weights), conv(activation), conv(non_torch), conv(cuda_graph))


@dataclass(frozen=True)
class MemoryBudget:
    """Every term of the KV-cache sizing, in bytes, plus the resulting capacity."""

    gpu_total_bytes: int
    gpu_memory_utilization: float
    requested_bytes: int
    weights: int
    activation: int
    non_torch: int
    cuda_graph: int
    cuda_graph_subtracted: bool
    kv_cache_bytes: int
    kv_bytes_per_token: int
    block_size: int
    num_blocks: int
    kv_tokens: int
    max_model_len: int
    max_num_batched_tokens: int
    max_num_seqs: int
    kv_cache_dtype: str
    # Speculative decoding: its draft's weights are out of the KV cache, its KV is in kv_bytes_per_token.
    speculation: SpeculationCost = NO_SPECULATION
    draft_weights: int = 0

    @property
    def max_concurrency_at_max_len(self) -> float:
        """Sequences of max_model_len that fit at once (vLLM's "Maximum concurrency")."""
        return self.kv_tokens / self.max_model_len


def plan_memory(
    shape: ModelShape,
    gpu_total_bytes: int,
    gpu_memory_utilization: float,
    max_model_len: int,
    max_num_batched_tokens: int,
    kv_cache_dtype: str = "auto",
    block_size: int = 16,
    non_torch_bytes: int = DEFAULT_NON_TORCH_BYTES,
    measured_overheads: MeasuredOverheads | None = None,
    max_num_seqs: int = 1024,
    subtract_cuda_graphs: bool = False,
    speculation: SpeculationCost = NO_SPECULATION,
) -> MemoryBudget:
    """Size the KV cache the way vLLM does: ceil(total x util) minus non-KV memory.

    ``subtract_cuda_graphs`` models VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS taking the graph
    pool out of the KV budget. vLLM 0.26.0 on an H100 did not (KV = requested - weights -
    activation - non-torch, to 0.01 GiB, for both shapes we measured), so it is off by default.

    A draft model (``speculation.draft``) takes its weights out of the KV space and adds its own KV
    to every token; its profile-run activations stay under the target's and are not counted.
    """
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    if block_size <= 0 or max_model_len <= 0:
        raise ValueError("block_size and max_model_len must be positive")
    m = measured_overheads or MeasuredOverheads()
    weights = m.weights if m.weights is not None else weight_bytes(shape).total + LOADED_WEIGHTS_OVERHEAD_BYTES
    activation = (
        m.activation
        if m.activation is not None
        else activation_bytes(shape, max_num_batched_tokens, max_num_seqs)
    )
    non_torch = m.non_torch if m.non_torch is not None else non_torch_bytes
    graphs = m.cuda_graph if m.cuda_graph is not None else cuda_graph_bytes(shape)

    draft_weights = speculation.draft_weight_bytes()
    requested = math.ceil(gpu_total_bytes * gpu_memory_utilization)  # request_memory()
    kv_cache = (requested - weights - draft_weights - activation - non_torch
                - (graphs if subtract_cuda_graphs else 0))
    per_token = kv_bytes_per_token(shape, kv_cache_dtype) + speculation.draft_kv_bytes_per_token(kv_cache_dtype)
    bytes_per_block = per_token * block_size  # sum of per-layer page_size_bytes
    num_blocks = max(kv_cache, 0) // bytes_per_block
    kv_tokens = num_blocks * block_size
    if kv_tokens < max_model_len:
        # Same refusal as vLLM's _check_enough_kv_cache_memory at startup.
        raise ValueError(
            f"KV cache holds {kv_tokens} tokens (<{max_model_len} = max_model_len); "
            f"{kv_cache / GiB:.2f} GiB left after weights/activation/overheads"
        )
    return MemoryBudget(
        gpu_total_bytes=gpu_total_bytes,
        gpu_memory_utilization=gpu_memory_utilization,
        requested_bytes=requested,
        weights=weights,
        activation=activation,
        non_torch=non_torch,
        cuda_graph=graphs,
        cuda_graph_subtracted=subtract_cuda_graphs,
        kv_cache_bytes=kv_cache,
        kv_bytes_per_token=per_token,
        block_size=block_size,
        num_blocks=num_blocks,
        kv_tokens=kv_tokens,
        max_model_len=max_model_len,
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs,
        kv_cache_dtype=kv_cache_dtype,
        speculation=speculation,
        draft_weights=draft_weights,
    )


@dataclass(frozen=True)
class Reconciliation:
    """Predicted KV capacity against what vLLM reported at startup."""

    predicted_tokens: int
    reported_tokens: int

    @property
    def relative_error(self) -> float:
        """Signed (predicted - reported) / reported."""
        return (self.predicted_tokens - self.reported_tokens) / self.reported_tokens

    def within_tolerance(self, tolerance: float = 0.03) -> bool:
        return abs(self.relative_error) <= tolerance


def compare_with_vllm(predicted_tokens: int, reported_blocks: int, block_size: int = 16) -> Reconciliation:
    """Compare a plan with vLLM's ``num_gpu_blocks`` (tokens = blocks x block_size)."""
    if reported_blocks <= 0 or block_size <= 0:
        raise ValueError("reported_blocks and block_size must be positive")
    return Reconciliation(predicted_tokens, reported_blocks * block_size)
