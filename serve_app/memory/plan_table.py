"""Turn a MemoryBudget and a use-case preset into vLLM engine args and a readable table."""

from __future__ import annotations

from typing import Any

from serve_app.memory.budget import MemoryBudget
from serve_app.memory.concurrency import max_num_batched_tokens_for_chunked_prefill
from serve_app.memory.estimates import GiB
from serve_app.memory.occupancy import KvSizing, planned_max_num_seqs
from serve_app.memory.presets import UseCasePreset


def engine_args_for(budget: MemoryBudget, preset: UseCasePreset, kv_sizing: KvSizing = "worst_case") -> dict[str, Any]:
    """vLLM scheduler/cache args for the preset: `worst_case` keeps its p95 requests free of preemption,
    `occupancy` lets them share the KV cache over time (`serve_app.memory.occupancy`)."""
    if preset.p95_sequence_len > budget.max_model_len:
        raise ValueError(
            f"preset {preset.name!r} needs {preset.p95_sequence_len} tokens of context "
            f"(p95 prompt + p95 output) but max_model_len is {budget.max_model_len}"
        )
    speculation = budget.speculation
    seqs = planned_max_num_seqs(budget.kv_tokens, budget.block_size, preset, kv_sizing,
                                extra_tokens_per_seq=speculation.extra_kv_tokens_per_sequence)
    # The budget's sampler profile assumed budget.max_num_seqs rows; do not exceed it.
    seqs = min(seqs, budget.max_num_seqs, preset.max_num_seqs_cap or budget.max_num_seqs)
    if seqs < 1:
        raise ValueError(f"KV cache ({budget.kv_tokens} tokens) cannot hold one p95 request")
    # Activation memory was sized for budget.max_num_batched_tokens: more would eat KV, and a smaller
    # step frees next to nothing (the engine profiles its own, +0.3-0.5% KV at 1.8-3.8k on an H200)
    # while it slows prefill under load; only a preset's chunk cap asks for one.
    batched = budget.max_num_batched_tokens
    if preset.prefill_chunk_cap is not None:
        batched = min(batched, max_num_batched_tokens_for_chunked_prefill(
            seqs, preset.prompt_len_p95, budget.kv_tokens, preset.prefill_chunk_cap,
            tokens_per_decode_step=speculation.tokens_per_decode_step))
    return {
        # Every running sequence's decode step (with its drafts) fits in one step's tokens.
        "max_num_seqs": max(1, min(seqs, batched // speculation.tokens_per_decode_step)),
        "max_num_batched_tokens": batched,
        "gpu_memory_utilization": budget.gpu_memory_utilization,
        "max_model_len": budget.max_model_len,
        "kv_cache_dtype": budget.kv_cache_dtype,
    }


def max_num_seqs_ceiling(budget: MemoryBudget, preset: UseCasePreset) -> int:
    """The most sequences the budget allows whatever their lengths: the sampler rows its activation memory
    is sized for, every sequence's decode step (with its drafts) within one step's tokens, and the preset's
    cap if it has one. vLLM's own admission then keeps them within the KV cache."""
    batched = budget.max_num_batched_tokens
    return max(1, min(budget.max_num_seqs, preset.max_num_seqs_cap or budget.max_num_seqs,
                      batched // budget.speculation.tokens_per_decode_step))


def _gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB"


def render_plan(budget: MemoryBudget, engine_args: dict[str, Any]) -> str:
    """Aligned two-column text table of the memory split and the chosen engine args."""
    graphs_note = "subtracted" if budget.cuda_graph_subtracted else "not subtracted"
    rows: list[tuple[str, str]] = [
        ("GPU total", _gib(budget.gpu_total_bytes)),
        (f"Requested (x {budget.gpu_memory_utilization:g})", _gib(budget.requested_bytes)),
        ("Weights", _gib(budget.weights)),
        *([("Draft model weights", _gib(budget.draft_weights))] if budget.draft_weights else []),
        ("Peak activation", _gib(budget.activation)),
        ("Non-torch", _gib(budget.non_torch)),
        (f"CUDA graphs ({graphs_note})", _gib(budget.cuda_graph)),
        ("KV cache", _gib(budget.kv_cache_bytes)),
        (f"KV bytes/token ({budget.kv_cache_dtype})", f"{budget.kv_bytes_per_token:,}"),
        ("KV tokens", f"{budget.kv_tokens:,}"),
        (f"KV blocks (x {budget.block_size})", f"{budget.num_blocks:,}"),
    ]
    rows += [(key, f"{value:,}" if isinstance(value, int) else str(value))
             for key, value in engine_args.items()]
    label_w = max(len(label) for label, _ in rows)
    value_w = max(len(value) for _, value in rows)
    return "\n".join(f"{label:<{label_w}}  {value:>{value_w}}" for label, value in rows)
