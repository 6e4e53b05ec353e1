"""Analytic byte counts for weights, KV cache, activations and CUDA graphs.

KV and weights are exact arithmetic; activation and CUDA-graph figures are calibrated estimates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from serve_app.memory.shape import AwqConfig, ModelShape

GiB = 1 << 30

# vLLM's dtype="auto" runs fp16/bf16 checkpoints as-is and downcasts fp32 ones
# (vllm/config/model.py, "Downcast for float32 models"), so every unquantized
# tensor is 2 bytes.
ACTIVATION_DTYPE_BYTES = 2
LOGITS_DTYPE_BYTES = 4  # logits are upcast to fp32 before sampling

_KV_DTYPE_BYTES = {"auto": 2, "float16": 2, "bfloat16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}

# Activation-model constants, fitted to the peaks vLLM 0.26.0 reported on an H100 at 8192
# batched tokens / 1024 seqs: 0.74 GiB for synthetic Llama-2-7B and 1.10 GiB for Llama-3-8B
# (benchmarks/results/kv_capacity_h100.json). The forward term lands near its analytic value
# (x1.07); the sampler's logits peak only partly overlaps it, hence well under one fp32 copy.
RESIDUAL_STREAM_COPIES = 2  # residual + normed hidden alive across the MLP
FORWARD_PEAK_SCALE = 1.07
SAMPLER_FP32_COPIES = 0.535
# What vLLM reports as "Model loading took" beyond the tensors' own bytes (rotary cache,
# kernel workspaces): 0.118 GiB (Llama-2-7B) and 0.106 GiB (Llama-3-8B) in the same runs.
LOADED_WEIGHTS_OVERHEAD_BYTES = int(0.11 * GiB)

# CUDA graph pool reported by vLLM for Llama-2-7B (32 layers x 4096 hidden),
# default capture sizes; scaled linearly in layers x hidden for other models.
REFERENCE_CUDA_GRAPH_BYTES = int(0.72 * GiB)
_REFERENCE_LAYERS_X_HIDDEN = 32 * 4096


@dataclass(frozen=True)
class WeightBreakdown:
    """Weight bytes per component; ``total`` is what the GPU holds after loading."""

    embeddings: int
    lm_head: int
    attention: int
    mlp: int
    norms: int

    @property
    def total(self) -> int:
        return self.embeddings + self.lm_head + self.attention + self.mlp + self.norms


def awq_linear_bytes(in_features: int, out_features: int, quant: AwqConfig) -> int:
    """Packed AWQ linear: int32 qweight + int32 qzeros + fp16 scales, per group."""
    pack = 32 // quant.bits  # values packed into one int32
    if in_features % quant.group_size or out_features % pack:
        raise ValueError(
            f"AWQ needs in_features % {quant.group_size} == 0 and "
            f"out_features % {pack} == 0, got {in_features}x{out_features}"
        )
    groups = in_features // quant.group_size
    qweight = in_features * out_features * quant.bits // 8
    qzeros = groups * (out_features // pack) * 4 if quant.zero_point else 0
    scales = groups * out_features * ACTIVATION_DTYPE_BYTES
    return qweight + qzeros + scales


def linear_bytes(in_features: int, out_features: int, quant: AwqConfig | None) -> int:
    """Bias-free linear layer bytes, quantized when ``quant`` is given."""
    if quant is None:
        return in_features * out_features * ACTIVATION_DTYPE_BYTES
    return awq_linear_bytes(in_features, out_features, quant)


def weight_bytes(shape: ModelShape) -> WeightBreakdown:
    """Llama layout: q,k,v,o + gate,up,down per layer, 2 RMSNorms per layer + final.

    Embeddings, lm_head and norms stay fp16 under AWQ; biases (e.g. Qwen2 qkv)
    are ignored (< 0.01% of the total).
    """
    h, q = shape.hidden_size, shape.quantization
    q_out = shape.num_attention_heads * shape.head_dim
    kv_out = shape.num_key_value_heads * shape.head_dim
    attention = (
        linear_bytes(h, q_out, q) + 2 * linear_bytes(h, kv_out, q) + linear_bytes(q_out, h, q)
    )
    i = shape.intermediate_size
    mlp = 2 * linear_bytes(h, i, q) + linear_bytes(i, h, q)
    embed = shape.vocab_size * h * ACTIVATION_DTYPE_BYTES
    return WeightBreakdown(
        embeddings=embed,
        lm_head=0 if shape.tie_word_embeddings else embed,
        attention=shape.num_layers * attention,
        mlp=shape.num_layers * mlp,
        norms=(2 * shape.num_layers + 1) * h * ACTIVATION_DTYPE_BYTES,
    )


def kv_dtype_bytes(kv_cache_dtype: str) -> int:
    """Bytes per cached element for a vLLM ``kv_cache_dtype`` value."""
    try:
        return _KV_DTYPE_BYTES[kv_cache_dtype]
    except KeyError:
        raise ValueError(
            f"unknown kv_cache_dtype {kv_cache_dtype!r}; known: {sorted(_KV_DTYPE_BYTES)}"
        ) from None


def kv_bytes_per_token(shape: ModelShape, kv_cache_dtype: str = "auto") -> int:
    """K and V for every layer: 2 x layers x kv_heads x head_dim x dtype bytes.

    Same as vLLM's AttentionSpec page size divided by block_size
    (vllm/v1/kv_cache_interface.py: num_kv_heads * (head_size + head_size_v) * dtype).
    """
    per_layer = 2 * shape.num_key_value_heads * shape.head_dim * kv_dtype_bytes(kv_cache_dtype)
    return shape.num_layers * per_layer


def activation_bytes(shape: ModelShape, max_num_batched_tokens: int, max_num_seqs: int = 1024) -> int:
    """ESTIMATE of the torch peak in vLLM's profile run (dummy forward + dummy sampler).

    Prefer a measured value (MeasuredOverheads.activation) whenever one exists.
    """
    # Forward peak sits in the MLP: gate_up output (2 x intermediate), SiLU*up
    # (1 x intermediate) and the residual stream, per batched token. The dummy
    # sampler (gpu_model_runner._dummy_sampler_run) runs on min(max_num_seqs,
    # tokens) rows of fp32 logits; the two peaks partly overlap (constants above).
    if max_num_batched_tokens <= 0 or max_num_seqs <= 0:
        raise ValueError("max_num_batched_tokens and max_num_seqs must be positive")
    per_token = 3 * shape.intermediate_size + RESIDUAL_STREAM_COPIES * shape.hidden_size
    forward = max_num_batched_tokens * per_token * ACTIVATION_DTYPE_BYTES * FORWARD_PEAK_SCALE
    num_reqs = min(max_num_seqs, max_num_batched_tokens)
    sampler = num_reqs * shape.vocab_size * LOGITS_DTYPE_BYTES * SAMPLER_FP32_COPIES
    return int(forward + sampler)


def cuda_graph_bytes(shape: ModelShape, reference_bytes: int = REFERENCE_CUDA_GRAPH_BYTES) -> int:
    """CUDA graph pool estimate: the Llama-2-7B reference scaled by layers x hidden."""
    scale = shape.num_layers * shape.hidden_size / _REFERENCE_LAYERS_X_HIDDEN
    return int(math.ceil(reference_bytes * scale))
