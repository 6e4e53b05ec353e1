"""Engine args from a budget + preset, and the rendered table."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from serve_app.memory.budget import MeasuredOverheads, ModelShape, plan_memory
from serve_app.memory.plan_table import engine_args_for, render_plan
from serve_app.memory.presets import get_preset

GiB = 1 << 30
CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "model_configs"
PUBLISHED = MeasuredOverheads.from_gib(weights=3.74, activation=1.43, non_torch=0.22, cuda_graph=0.72)


def llama2_awq_budget(max_model_len=2048, **kw):
    shape = ModelShape.from_hf_config(json.loads((CONFIGS / "llama-2-7b-awq.json").read_text()))
    return plan_memory(shape, round(79.17 * GiB), 0.9, max_model_len, 8192,
                       measured_overheads=PUBLISHED, subtract_cuda_graphs=False, **kw)


def test_engine_args_interactive_by_hand():
    args = engine_args_for(llama2_awq_budget(), get_preset("interactive"))
    # KV allows 65 p95 sequences (8429 // 128); a step holds the 8,192 tokens activation was sized for.
    assert args == {
        "max_num_seqs": 65,
        "max_num_batched_tokens": 8192,
        "gpu_memory_utilization": 0.9,
        "max_model_len": 2048,
        "kv_cache_dtype": "auto",
    }


def test_caps_and_profiled_limits_respected():
    # fp8: 65.86 GiB / (16 tok * 256 KiB) = 16,860 blocks, 16,859 usable.
    interactive = engine_args_for(llama2_awq_budget(kv_cache_dtype="fp8"), get_preset("interactive"))
    assert interactive["max_num_seqs"] == 131  # KV allows 16859 // 128 = 131; no preset cap
    capped = replace(get_preset("interactive"), max_num_seqs_cap=100, prefill_chunk_cap=1024)
    capped_args = engine_args_for(llama2_awq_budget(kv_cache_dtype="fp8"), capped)
    # A preset's caps still bind: 100 sequences, and a step of 100 decodes + a 1,024-token chunk -> 1,280.
    assert (capped_args["max_num_seqs"], capped_args["max_num_batched_tokens"]) == (100, 1280)
    budget = llama2_awq_budget(max_model_len=8192, kv_cache_dtype="fp8", max_num_seqs=32)
    long_form = engine_args_for(budget, get_preset("long-form"))
    assert long_form["max_num_seqs"] == 32  # KV allows 16859 // 448 = 37, profile 32
    batch = engine_args_for(budget, get_preset("batch"))
    assert batch["max_num_batched_tokens"] == budget.max_num_batched_tokens
    assert batch["kv_cache_dtype"] == "fp8"


def test_preset_longer_than_max_model_len_rejected():
    with pytest.raises(ValueError, match="max_model_len"):
        engine_args_for(llama2_awq_budget(), get_preset("long-form"))


def test_render_plan_contains_key_figures_aligned():
    budget = llama2_awq_budget()
    args = engine_args_for(budget, get_preset("interactive"))
    text = render_plan(budget, args)
    for needle in ("65.86 GiB", "134,880", "8,430", "3.74 GiB", "1.43 GiB", "0.22 GiB",
                   "0.72 GiB", "71.25 GiB", "524,288", "not subtracted", "max_num_seqs", "8,192"):
        assert needle in text, needle
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1  # right-aligned values, fixed width
    assert len(lines) == 10 + len(args)


def test_llmserve_plan_by_policy(capsys):
    import json as json_module

    from serve_app.cli import main

    def plan_of(*extra: str) -> dict:
        assert main(["plan", "llama2-7b", "--gpu", "H200", "--max-model-len", "2048", "--json", *extra], plugins=[]) == 0
        out = capsys.readouterr().out
        return json_module.loads(out[out.index("\n{") + 1:])

    adaptive, occupancy, worst = plan_of(), plan_of("--policy", "memory_occupancy"), plan_of("--policy", "memory_budget")
    # As the controller plans by default (engine.batch_size_policy: adaptive), by memory_occupancy and memory_budget.
    assert worst["engine_args"]["max_num_seqs"] < occupancy["engine_args"]["max_num_seqs"] < 1024
    assert adaptive["engine_args"]["max_num_seqs"] == 1024
    assert adaptive["first_window_cap"] == occupancy["engine_args"]["max_num_seqs"]
    assert occupancy["first_window_cap"] is None
    assert {p["engine_args"]["max_num_batched_tokens"] for p in (adaptive, occupancy, worst)} == {8192}


def test_the_max_num_seqs_ceiling_is_the_sampler_rows_within_one_steps_tokens_and_the_presets_cap():
    from serve_app.memory.plan_table import max_num_seqs_ceiling
    from serve_app.memory.speculation import SpeculationCost

    mixed = get_preset("mixed")
    assert max_num_seqs_ceiling(llama2_awq_budget(), mixed) == 1024  # 8,192 tokens per step
    # Four tokens a sequence per step (three drafts): 2,048 tokens hold 512 decodes.
    shape = ModelShape.from_hf_config(json.loads((CONFIGS / "llama-2-7b-awq.json").read_text()))
    drafted = plan_memory(shape, round(79.17 * GiB), 0.9, 2048, 2048, measured_overheads=PUBLISHED,
                          subtract_cuda_graphs=False, speculation=SpeculationCost(num_speculative_tokens=3))
    assert max_num_seqs_ceiling(drafted, mixed) == 512
    assert max_num_seqs_ceiling(llama2_awq_budget(), replace(mixed, max_num_seqs_cap=300)) == 300
