"""Compiled artifacts that make an LLM replica start warm, kept under one directory.

A replica's first start on a machine compiles: vLLM's torch.compile graphs (`VLLM_CACHE_ROOT`),
FlashInfer's JIT kernels and Triton's kernels (each in its own place under $HOME by default). Measured
on an H200 (benchmarks/results/autoscaling_h200): 228 s to healthy with nothing cached,
101 s with everything cached. Pointing all of them at one directory lets a volume shared by the
worker pods carry them, so a replica that autoscaling adds on a fresh node starts warm.
"""
from __future__ import annotations

from pathlib import PurePosixPath


def compile_cache_env(cache_dir: str) -> dict[str, str]:
    """The environment that sends every compile cache an engine fills to `cache_dir`."""
    root = PurePosixPath(cache_dir)
    return {
        "VLLM_CACHE_ROOT": str(root / "vllm"),
        # FlashInfer keeps its JIT kernels under <base>/.cache/flashinfer (base: $HOME unless set).
        "FLASHINFER_WORKSPACE_BASE": str(root / "flashinfer"),
        "TRITON_CACHE_DIR": str(root / "triton"),
    }
