"""The torch fallback for vLLM's CPU 4-bit GEMM, fed weights prepared by vLLM's own AWQ code path."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from serve_app.cpu_awq_fallback import cpu_gemm_wna16, dequantize_wna16
from serve_app.synthetic_model import pack_awq_int4

K, N, GROUP = 256, 64, 128


@pytest.fixture(autouse=True)
def single_process_tensor_parallel(monkeypatch):
    """vLLM's parameters read their tensor-parallel rank; outside an engine there is one rank."""
    import vllm.model_executor.parameter as parameter

    monkeypatch.setattr(parameter, "get_tensor_model_parallel_rank", lambda: 0)
    monkeypatch.setattr(parameter, "get_tensor_model_parallel_world_size", lambda: 1)


def awq_layer(generator: torch.Generator):
    groups = K // GROUP
    q = torch.randint(0, 16, (K, N), dtype=torch.int32, generator=generator)
    zeros = torch.randint(0, 16, (groups, N), dtype=torch.int32, generator=generator)
    scales = torch.rand(groups, N, generator=generator, dtype=torch.float32) * 0.01 + 0.001
    expected = (q - zeros.repeat_interleave(GROUP, 0)).float() * scales.repeat_interleave(GROUP, 0)
    layer = torch.nn.Module()
    layer.qweight = torch.nn.Parameter(pack_awq_int4(q), requires_grad=False)
    layer.qzeros = torch.nn.Parameter(pack_awq_int4(zeros), requires_grad=False)
    layer.scales = torch.nn.Parameter(scales, requires_grad=False)
    return layer, expected


def prepare_like_vllm(layer) -> None:
    """What vLLM does to an AWQ layer before `CPUWNA16LinearKernel.apply_weights` (w4a16 path)."""
    from vllm.model_executor.kernels.linear.mixed_precision.cpu import CPUWNA16LinearKernel
    from vllm.model_executor.layers.quantization.auto_awq import _convert_awq_to_standard_format
    from vllm.scalar_type import scalar_types

    _convert_awq_to_standard_format(layer, "qweight", "qzeros", 4)
    layer.qzeros.data = layer.qzeros.t().contiguous()  # output_dim 0 -> the kernel's [G, N/8]
    kernel = SimpleNamespace(w_q_name="qweight", w_s_name="scales",
                             config=SimpleNamespace(weight_type=scalar_types.uint4))
    CPUWNA16LinearKernel._process_gptq_weights_w4a16(kernel, layer)


def test_dequantized_weight_matches_the_awq_checkpoint():
    layer, expected = awq_layer(torch.Generator().manual_seed(0))
    prepare_like_vllm(layer)
    weight = dequantize_wna16(layer.qweight.data, layer.scales.data, layer.qzeros.data)
    torch.testing.assert_close(weight, expected)


def test_gemm_matches_a_dense_matmul_with_bias_and_batch_dims():
    generator = torch.Generator().manual_seed(1)
    layer, expected = awq_layer(generator)
    prepare_like_vllm(layer)
    x = torch.randn(2, 3, K, generator=generator)
    bias = torch.randn(N, generator=generator)
    out = cpu_gemm_wna16(x, layer.qweight.data, layer.scales.data, layer.qzeros.data, bias, 8, "vec")
    torch.testing.assert_close(out, x @ expected + bias, rtol=1e-4, atol=1e-4)
