"""Controller decisions: engine args per device, context-clamped presets, window caps."""
from __future__ import annotations

import math

import pytest

from serve_app.memory import ModelShape, get_preset
from serve_app.policy.batch_controller import (CPU_MAX_NUM_SEQS, DeviceInfo, LengthWindow, WindowCapState,
                                               next_window_cap, observed_occupancy_cap, plan_engine,
                                               preset_within_context)
from serve_app.synthetic_model import SHAPES, hf_config

GiB = 1024**3


def shape(name: str) -> ModelShape:
    return ModelShape.from_hf_config(hf_config(SHAPES[name]))


def test_cpu_plan_uses_the_fixed_kv_space():
    plan = plan_engine(shape("tiny"), DeviceInfo("cpu", "cpu", 0, 0, 1 * GiB), get_preset("interactive"),
                       max_model_len=512, gpu_memory_utilization=0.9, max_num_batched_tokens=2048,
                       kv_cache_dtype="auto")
    # tiny: 2 layers x 2 KV heads x 64 x 2 (K, V) x 2 bytes = 1,024 B/token -> 1 GiB = 1,048,576 tokens.
    assert plan.predicted_kv_tokens == 1_048_576
    assert plan.block_size == 128
    # interactive clamped to 512 context: p95 fits in 4 blocks of 128; 8191 usable blocks / 4 = 2047, above
    # the 128 sequences vLLM's CPU backend runs by default.
    assert plan.engine_args["max_num_seqs"] == CPU_MAX_NUM_SEQS == 128


def test_gpu_plan_differs_by_gpu_memory():
    preset = get_preset("batch")
    common = dict(max_model_len=2048, gpu_memory_utilization=0.9, max_num_batched_tokens=8192, kv_cache_dtype="auto")
    h100 = plan_engine(shape("llama2-7b"), DeviceInfo("cuda", "H100", 81559 * 2**20, 0), preset, **common)
    l4 = plan_engine(shape("llama2-7b"), DeviceInfo("cuda", "L4", 22 * GiB, 0), preset, **common)
    assert h100.predicted_kv_tokens > 4 * l4.predicted_kv_tokens
    assert h100.engine_args["max_num_seqs"] > l4.engine_args["max_num_seqs"] >= 1
    # Within 3% of the 136,288 tokens vLLM 0.26 allocated on an H100 for this shape (our GPU run).
    assert abs(h100.predicted_kv_tokens - 136_288) / 136_288 < 0.03


def test_preset_clamped_to_context_keeps_proportions():
    mixed = get_preset("mixed")  # p95 3072 prompt + 1024 output
    clamped = preset_within_context(mixed, 2048)
    assert (clamped.prompt_len_p95, clamped.output_len_p95) == (1536, 512)
    assert clamped.prompt_len_mean <= clamped.prompt_len_p95
    assert preset_within_context(mixed, 8192) is mixed


def lengths(pairs: list[tuple[int, int]]) -> LengthWindow:
    window = LengthWindow(size=64)
    for prompt, output in pairs:
        window.observe(prompt, output)
    return window


def test_window_cap_from_observed_p95_lengths():
    observed = lengths([(100, 20)] * 19 + [(1000, 500)])
    # serve_app.statistics' p95 of 20 samples sits at rank 0.95 * 19 = 18.05: 5% of the way from the
    # 19th sample to the 20th, rounded up to whole tokens.
    assert observed.prompt_p95() == math.ceil(100 + 0.05 * (1000 - 100)) == 145
    assert observed.output_p95() == math.ceil(20 + 0.05 * (500 - 20)) == 44
    state = next_window_cap(WindowCapState(cap=256), kv_tokens=16 * 1001, block_size=16, lengths=observed,
                            preemptions_total=0, max_num_seqs=256)
    # (145 + 44) / 16 -> 12 blocks per sequence; 1001 blocks - 1 null block = 1000 usable -> 83.
    assert state.cap == 1000 // math.ceil((145 + 44) / 16) == 83


def test_window_cap_waits_for_enough_samples():
    state = next_window_cap(WindowCapState(cap=40), kv_tokens=16 * 1001, block_size=16,
                            lengths=lengths([(100, 20)] * 3), preemptions_total=0, max_num_seqs=256)
    assert state.cap == 40


def test_preemption_shrinks_the_cap_and_is_counted_once():
    observed = lengths([(100, 20)] * 20)
    first = next_window_cap(WindowCapState(cap=100), kv_tokens=16 * 1001, block_size=16, lengths=observed,
                            preemptions_total=3, max_num_seqs=256)
    assert first == WindowCapState(cap=80, preemptions_seen=3, reason="shrink")
    again = next_window_cap(first, kv_tokens=16 * 1001, block_size=16, lengths=observed,
                            preemptions_total=3, max_num_seqs=256)
    # No new preemption, but no KV usage reported either: the cap holds (no growth without evidence).
    assert again == WindowCapState(cap=80, preemptions_seen=3, reason="hold")


def test_observed_occupancy_cap_from_each_request_s_own_lengths():
    # (100, 20): mean 100 + 9.5 + 8 (half a block) = 117.5 tokens, std sqrt((399 + 256) / 12) = 7.39;
    # 1000 usable blocks = 16,000 tokens: 134 x 117.5 + 2.326 sqrt(134) 7.39 = 15,944 fits, 135 does not.
    assert observed_occupancy_cap(16 * 1001, 16, lengths([(100, 20)] * 20)) == 134
    # The p95 x p95 figure (1000 // 8 blocks = 125) is below it; with one long request in the window
    # the occupancy figure falls under the p95 one, which then is the floor.
    assert observed_occupancy_cap(16 * 1001, 16, lengths([(100, 20)] * 19 + [(1000, 500)])) == 83


def test_window_cap_adapts_to_preemptions_and_kv_headroom():
    observed = lengths([(100, 20)] * 20)  # occupancy cap 134 (above); grow step ceil(0.05 x 134) = 7
    state = WindowCapState(cap=100)

    def report(preemptions: int, usage: float | None, max_num_seqs: int = 256) -> WindowCapState:
        nonlocal state
        state = next_window_cap(state, kv_tokens=16 * 1001, block_size=16, lengths=observed,
                                preemptions_total=preemptions, max_num_seqs=max_num_seqs, kv_cache_usage=usage)
        return state

    assert report(2, 0.95) == WindowCapState(cap=80, preemptions_seen=2, reason="shrink")
    assert report(2, 0.5) == WindowCapState(cap=87, preemptions_seen=2, reason="grow")
    assert report(2, 0.92) == WindowCapState(cap=87, preemptions_seen=2, reason="hold")  # above the high-water mark
    assert report(2, None).reason == "hold"
    # With room in the cache the cap grows past the occupancy figure (134), up to max_num_seqs.
    assert [report(2, 0.3, max_num_seqs=150).cap for _ in range(9)] == [94, 101, 108, 115, 122, 129, 136, 143, 150]
    assert report(2, 0.3, max_num_seqs=150).reason == "hold"  # at max_num_seqs: nothing left to grow
    assert report(2, 0.95, max_num_seqs=150) == WindowCapState(cap=134, preemptions_seen=2, reason="clamp")
    assert report(3, 0.3) == WindowCapState(cap=107, preemptions_seen=3, reason="shrink")
    assert report(3, 0.3, max_num_seqs=100) == WindowCapState(cap=100, preemptions_seen=3, reason="clamp")


def test_window_cap_is_held_to_the_occupancy_figure_without_measured_room():
    observed = lengths([(100, 20)] * 20)  # occupancy figure 134
    common = dict(kv_tokens=16 * 1001, block_size=16, lengths=observed, preemptions_total=0, max_num_seqs=256)
    assert next_window_cap(WindowCapState(cap=200), **common, kv_cache_usage=None).cap == 134
    assert next_window_cap(WindowCapState(cap=200), **common, kv_cache_usage=0.9).cap == 134
    assert next_window_cap(WindowCapState(cap=200), **common, kv_cache_usage=0.89) == WindowCapState(
        cap=207, reason="grow")


def test_window_cap_does_not_grow_before_enough_samples():
    few = lengths([(100, 20)] * 15)
    state = next_window_cap(WindowCapState(cap=40), kv_tokens=16 * 1001, block_size=16, lengths=few,
                            preemptions_total=0, max_num_seqs=256, kv_cache_usage=0.1)
    assert state == WindowCapState(cap=40, reason="hold")
    shrunk = next_window_cap(state, kv_tokens=16 * 1001, block_size=16, lengths=few,
                             preemptions_total=1, max_num_seqs=256, kv_cache_usage=0.1)
    assert shrunk.cap == 32


def test_an_initial_cap_above_the_occupancy_figure_is_clamped_to_it():
    state = next_window_cap(WindowCapState(cap=256), kv_tokens=16 * 1001, block_size=16,
                            lengths=lengths([(100, 20)] * 20), preemptions_total=0, max_num_seqs=256,
                            kv_cache_usage=0.95)
    assert state == WindowCapState(cap=134, reason="clamp")


def test_kv_usage_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="kv_cache_usage"):
        next_window_cap(WindowCapState(cap=8), kv_tokens=16 * 1001, block_size=16, lengths=lengths([]),
                        preemptions_total=0, max_num_seqs=8, kv_cache_usage=45.0)


@pytest.mark.parametrize("cap", [0, 1])
def test_window_cap_never_below_one(cap):
    state = next_window_cap(WindowCapState(cap=cap), kv_tokens=16 * 2, block_size=16,
                            lengths=lengths([(4000, 4000)] * 20), preemptions_total=5, max_num_seqs=8)
    assert state.cap == 1


def test_a_measured_profile_cuts_max_num_seqs_to_the_largest_batch_meeting_the_slo():
    import asyncio
    import json
    from pathlib import Path

    from serve_app.deployments.controller import Controller
    from serve_app.memory.batch_profile import BatchProfile
    from serve_app.synthetic_model import SHAPES, hf_config

    profile_path = Path(__file__).parents[2] / "benchmarks/results/batch_sweep_h100/batch_sweep_profile.json"
    profile = BatchProfile.from_json(profile_path.read_text())
    h100 = DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", 80 * GiB, 79 * GiB)
    hf = hf_config(SHAPES["llama2-7b"])
    engine = {"max_model_len": 2048, "preset": "interactive"}
    memory_only = asyncio.run(Controller({"engine": engine}).plan("r", h100, hf)).engine_args["max_num_seqs"]
    with_profile = asyncio.run(Controller({"engine": {**engine, "batch_profile": str(profile_path)}})
                               .plan("r", h100, hf)).engine_args["max_num_seqs"]
    # interactive: p99 TTFT <= 0.5 s and TPOT <= 0.1 s; measured on the H100: batch 64 has TTFT 0.43 s.
    slo = get_preset("interactive")
    meeting = [p.batch_size for p in profile.points if p.ttft_p99_s <= slo.ttft_s and p.tpot_p99_s <= slo.tpot_s]
    assert with_profile == min(max(meeting), memory_only) == 64
    assert memory_only > 64
    assert json.loads(profile_path.read_text())["device"].startswith("NVIDIA H100")


def test_an_unreadable_profile_is_a_config_error(tmp_path):
    from serve_app.config import ConfigError
    from serve_app.deployments.controller import Controller

    with pytest.raises(ConfigError, match="engine.batch_profile"):
        Controller({"engine": {"batch_profile": str(tmp_path / "missing.json")}})


def test_a_pinned_batch_size_is_not_reported_as_a_prediction_miss(caplog):
    """Once logged on an H200 as 'predicted 0 KV tokens, vLLM allocated 248128 (-100.0%)': a replica whose
    config pins the batch size asks for no plan, so there is no prediction to compare."""
    import asyncio

    from serve_app.deployments.controller import Controller

    controller = Controller({})
    answer = asyncio.run(controller.report_allocation("r1", num_blocks=15_508, block_size=16, max_num_seqs=256))
    assert answer == {"relative_error": None, "within_tolerance": None}
    assert "predicted" not in caplog.text
    assert asyncio.run(controller.status())["r1"]["actual_kv_tokens"] == 248_128


def test_occupancy_sizing_plans_more_sequences_with_the_same_token_budget():
    from serve_app.memory import engine_args_for, plan_memory
    from serve_app.memory.gpus import gpu_memory_bytes
    from serve_app.memory.occupancy import planned_max_num_seqs

    preset = preset_within_context(get_preset("mixed"), 2048)
    h200 = DeviceInfo("cuda", "NVIDIA H200", gpu_memory_bytes("H200"), 0)
    common = dict(max_model_len=2048, gpu_memory_utilization=0.9, max_num_batched_tokens=8192, kv_cache_dtype="auto")
    worst = plan_engine(shape("llama2-7b"), h200, preset, **common)
    occupancy = plan_engine(shape("llama2-7b"), h200, preset, **common, kv_sizing="occupancy")
    assert (worst.kv_sizing, occupancy.kv_sizing) == ("worst_case", "occupancy")
    assert occupancy.predicted_kv_tokens == worst.predicted_kv_tokens
    budget = plan_memory(shape("llama2-7b"), h200.total_bytes, 0.9, 2048, 8192, block_size=16)
    seqs = min(planned_max_num_seqs(budget.kv_tokens, 16, preset, "occupancy"), budget.max_num_seqs)
    assert worst.engine_args["max_num_seqs"] < occupancy.engine_args["max_num_seqs"] == seqs
    assert occupancy.engine_args == {k: v for k, v in engine_args_for(budget, preset, "occupancy").items()
                                     if k in occupancy.engine_args}
    # Tokens per step, whatever max_num_seqs: the 8,192 the activation memory was sized for.
    assert occupancy.engine_args["max_num_batched_tokens"] == worst.engine_args["max_num_batched_tokens"] == 8192


def test_occupancy_on_cpu_counts_the_speculative_slots_and_vllms_cpu_default():
    from serve_app.memory.speculation import SpeculationCost

    cpu = DeviceInfo("cpu", "cpu", 0, 0, GiB // 32)  # 32,768 tokens of tiny's 1,024 B in blocks of 128
    common = dict(max_model_len=2048, gpu_memory_utilization=0.9, max_num_batched_tokens=2048, kv_cache_dtype="auto")
    preset = get_preset("long-form")
    plain = plan_engine(shape("tiny"), cpu, preset, **common, kv_sizing="occupancy")
    drafted = plan_engine(shape("tiny"), cpu, preset, **common, kv_sizing="occupancy",
                          speculation=SpeculationCost(num_speculative_tokens=100))
    worst = plan_engine(shape("tiny"), cpu, preset, **common)
    assert worst.engine_args["max_num_seqs"] < drafted.engine_args["max_num_seqs"] < plain.engine_args["max_num_seqs"]
    roomy = DeviceInfo("cpu", "cpu", 0, 0, 8 * GiB)
    assert plan_engine(shape("tiny"), roomy, preset, **common, kv_sizing="occupancy").engine_args["max_num_seqs"] \
        == CPU_MAX_NUM_SEQS


def test_adaptive_plan_runs_the_engine_at_its_memory_ceiling_and_starts_the_window_at_the_kv_figure():
    from serve_app.memory.gpus import gpu_memory_bytes

    h200 = DeviceInfo("cuda", "NVIDIA H200", gpu_memory_bytes("H200"), 0)
    common = dict(max_model_len=8192, gpu_memory_utilization=0.9, max_num_batched_tokens=8192, kv_cache_dtype="auto",
                  kv_sizing="occupancy")
    for preset in ("interactive", "mixed", "batch", "long-form"):
        sized = plan_engine(shape("llama3-8b"), h200, get_preset(preset), **common)
        adaptive = plan_engine(shape("llama3-8b"), h200, get_preset(preset), **common, engine_at_ceiling=True)
        assert adaptive.engine_args == {"max_num_seqs": 1024, "max_num_batched_tokens": 8192}
        assert adaptive.window_cap_start == adaptive.first_window_cap == sized.engine_args["max_num_seqs"]
        assert sized.window_cap_start is None and sized.first_window_cap == sized.engine_args["max_num_seqs"]
        assert adaptive.predicted_kv_tokens == sized.predicted_kv_tokens
    # mixed on the H200 of run 3: 649 sequences sized by occupancy, the engine at vLLM's own 1,024.
    assert plan_engine(shape("llama3-8b"), h200, get_preset("mixed"), **common,
                       engine_at_ceiling=True).window_cap_start == 649
    cpu = DeviceInfo("cpu", "cpu", 0, 0, GiB // 32)
    cpu_common = {**common, "max_model_len": 2048, "max_num_batched_tokens": 2048}
    sized_cpu = plan_engine(shape("tiny"), cpu, get_preset("long-form"), **cpu_common)
    adaptive_cpu = plan_engine(shape("tiny"), cpu, get_preset("long-form"), **cpu_common, engine_at_ceiling=True)
    assert adaptive_cpu.engine_args["max_num_seqs"] == CPU_MAX_NUM_SEQS > sized_cpu.engine_args["max_num_seqs"]
    assert adaptive_cpu.window_cap_start == sized_cpu.engine_args["max_num_seqs"]


def test_the_adaptive_controller_starts_the_window_cap_at_the_plans_figure():
    import asyncio

    from serve_app.deployments.controller import Controller

    controller = Controller({"engine": {"max_model_len": 2048, "preset": "long-form"}})  # adaptive by default
    cpu = DeviceInfo("cpu", "cpu", 0, 0, GiB // 32)
    plan = asyncio.run(controller.plan("r1", cpu, hf_config(SHAPES["tiny"])))
    assert plan.engine_args["max_num_seqs"] == CPU_MAX_NUM_SEQS > plan.window_cap_start
    asyncio.run(controller.report_allocation("r1", num_blocks=256, block_size=128, max_num_seqs=CPU_MAX_NUM_SEQS))
    status = asyncio.run(controller.status())["r1"]
    assert status["window"] == status["first_window_cap"] == plan.window_cap_start
    # An engine running fewer than the plan's first cap (max_num_seqs pinned) bounds it.
    asyncio.run(controller.report_allocation("r1", num_blocks=256, block_size=128, max_num_seqs=4))
    assert asyncio.run(controller.status())["r1"]["window"] == 4


def test_the_controller_plans_by_the_configured_policy_and_grows_the_window_on_headroom():
    import asyncio

    from serve_app.config import parse_config
    from serve_app.deployments.controller import Controller

    assert parse_config({"engine": {"batch_size_policy": "memory_occupancy"}}).engine.kv_sizing == "occupancy"
    assert parse_config({}).engine.kv_sizing == "occupancy"
    assert parse_config({}).engine.engine_at_ceiling
    assert not parse_config({"engine": {"batch_size_policy": "memory_occupancy"}}).engine.engine_at_ceiling
    assert parse_config({"engine": {"batch_size_policy": "memory_budget"}}).engine.kv_sizing == "worst_case"
    assert parse_config({"engine": {"batch_size_policy": "vllm_default"}}).engine.kv_sizing is None
    controller = Controller({"engine": {"batch_size_policy": "memory_occupancy", "max_model_len": 512,
                                        "preset": "interactive"}})
    cpu = DeviceInfo("cpu", "cpu", 0, 0, GiB // 64)
    plan = asyncio.run(controller.plan("r1", cpu, hf_config(SHAPES["tiny"])))
    assert plan.kv_sizing == "occupancy"
    asyncio.run(controller.report_allocation("r1", num_blocks=128, block_size=128, max_num_seqs=100))
    # 127 usable blocks of 128 = 16,256 tokens; (200, 100) holds 200 + 49.5 + 64 (half a block) = 313.5 on
    # average, std sqrt((100^2 - 1 + 128^2) / 12) = 46.9: 49 x 313.5 + 2.326 x 7 x 46.9 = 16,125 fits, 50 not.
    assert asyncio.run(controller.report_load("r1", [(200, 100)] * 20, 0)) == 49  # from max_num_seqs 100
    assert asyncio.run(controller.status())["r1"]["window_reason"] == "clamp"
    assert asyncio.run(controller.report_load("r1", [], 1, kv_cache_usage=0.5)) == 39  # 49 x 0.8
    assert asyncio.run(controller.report_load("r1", [], 1)) == 39  # no usage sent: no growth
    assert asyncio.run(controller.report_load("r1", [], 1, kv_cache_usage=0.5)) == 39 + 3  # ceil(0.05 x 49)
    assert "engine_load" not in asyncio.run(controller.status())["r1"]
    load = {"num_running": 40, "num_waiting": 2, "loop_lag_p99_s": 0.02, "loop_lag_max_s": 0.05}
    assert asyncio.run(controller.report_load("r1", [], 1, kv_cache_usage=0.95, engine_load=load)) == 42
    status = asyncio.run(controller.status())["r1"]
    assert (status["kv_sizing"], status["window"], status["window_reason"]) == ("occupancy", 42, "hold")
    assert status["engine_load"] == load  # as the replica sent it, for /v1/controller/status
