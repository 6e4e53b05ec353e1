"""GPU memory budgeting for vLLM workers: KV-cache capacity and scheduler limits."""

from serve_app.memory.budget import (
    MeasuredOverheads,
    MemoryBudget,
    ModelShape,
    Reconciliation,
    compare_with_vllm,
    plan_memory,
)
from serve_app.memory.gpus import gpu_memory_bytes
from serve_app.memory.plan_table import engine_args_for, render_plan
from serve_app.memory.presets import UseCasePreset, get_preset

__all__ = [
    "MeasuredOverheads",
    "MemoryBudget",
    "ModelShape",
    "Reconciliation",
    "UseCasePreset",
    "compare_with_vllm",
    "engine_args_for",
    "get_preset",
    "gpu_memory_bytes",
    "plan_memory",
    "render_plan",
]
