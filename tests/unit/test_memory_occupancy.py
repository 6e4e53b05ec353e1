"""Occupancy-based KV sizing: footprint moments of in-flight sequences and the concurrency they allow."""
from __future__ import annotations

import math

import numpy as np
import pytest

from serve_app.memory.occupancy import (FootprintMoments, max_concurrency_at_overflow, planned_max_num_seqs)
from serve_app.memory.presets import PRESETS, UseCasePreset
from serve_app.policy.batch_controller import preset_within_context


def test_fixed_lengths_give_the_uniform_decode_moments():
    moments = FootprintMoments.from_requests([(100, 20)] * 5, block_size=16)
    # Steps 0..19 of a 100-token prompt: mean 100 + 19/2, variance (20^2 - 1)/12; plus half a block of
    # rounding (mean 8, variance 16^2/12).
    assert moments.mean_tokens == pytest.approx(100 + 9.5 + 8)
    assert moments.std_tokens == pytest.approx(math.sqrt((400 - 1) / 12 + 256 / 12))


def test_requests_are_seen_in_proportion_to_their_decode_steps():
    # (10, 1) is in flight for one step holding 10 tokens; (20, 3) for three, holding 20, 21, 22.
    # A uniform instant sees {10, 20, 21, 22}: mean 18.25, variance 23.1875.
    moments = FootprintMoments.from_requests([(10, 1), (20, 3)], block_size=1)
    assert moments.mean_tokens == pytest.approx(18.25 + 0.5)
    assert moments.std_tokens == pytest.approx(math.sqrt(23.1875 + 1 / 12))


def test_speculative_slots_add_to_every_sequence():
    plain = FootprintMoments.from_requests([(100, 20)], block_size=16)
    spec = FootprintMoments.from_requests([(100, 20)], block_size=16, extra_tokens_per_seq=4)
    assert spec.mean_tokens == plain.mean_tokens + 4
    assert spec.std_tokens == plain.std_tokens


def _preset_sample(preset: UseCasePreset, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    def lognormal(mean: float, sigma: float) -> np.ndarray:
        return rng.lognormal(math.log(mean) - sigma * sigma / 2, sigma, size)

    return lognormal(preset.prompt_len_mean, preset.prompt_sigma), lognormal(preset.output_len_mean, preset.output_sigma)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_moments_agree_with_a_monte_carlo(name):
    preset = preset_within_context(PRESETS[name], 2048)
    rng = np.random.default_rng(11)
    prompts, outputs = _preset_sample(preset, rng, 400_000)
    seen = rng.choice(outputs.size, outputs.size, p=outputs / outputs.sum())  # length-biased
    tokens = prompts[seen] + rng.random(seen.size) * outputs[seen]
    moments = FootprintMoments.from_preset(preset, block_size=16)
    assert moments.mean_tokens == pytest.approx(tokens.mean() + 8, rel=0.03)
    assert moments.std_tokens == pytest.approx(math.sqrt(tokens.var() + 256 / 12), rel=0.03)


@pytest.mark.parametrize(("name", "kv_tokens"), [("mixed", 250_000), ("interactive", 50_000), ("long-form", 100_000)])
def test_a_simulated_fill_overflows_about_as_often_as_asked(name, kv_tokens):
    preset, block = preset_within_context(PRESETS[name], 2048), 16
    n = max_concurrency_at_overflow(kv_tokens, block, FootprintMoments.from_preset(preset, block), 0.01)
    rng = np.random.default_rng(3)
    prompts, outputs = (np.maximum(1, np.rint(x)).astype(int) for x in _preset_sample(preset, rng, 200_000))
    trials = 5_000
    seen = rng.choice(outputs.size, (trials, n), p=outputs / outputs.sum())
    step = np.floor(rng.random((trials, n)) * outputs[seen]).astype(int)
    held = np.ceil((prompts[seen] + step) / block) * block
    usable = (kv_tokens // block - 1) * block
    assert 0.002 <= float((held.sum(axis=1) > usable).mean()) <= 0.04
    # Not a figure that merely cannot overflow: a quarter more sequences overflow often.
    more = rng.choice(outputs.size, (trials, n // 4), p=outputs / outputs.sum())
    more_held = np.ceil((prompts[more] + np.floor(rng.random(more.shape) * outputs[more])) / block) * block
    assert float((held.sum(axis=1) + more_held.sum(axis=1) > usable).mean()) > 0.2


def test_concurrency_grows_with_kv_tokens_and_stays_within_bounds():
    moments = FootprintMoments(mean_tokens=700.0, std_tokens=400.0)
    previous = 0
    for kv_tokens in range(0, 400_000, 7_919):
        n = max_concurrency_at_overflow(kv_tokens, 16, moments, 0.01)
        usable = max(kv_tokens // 16 - 1, 0) * 16
        assert previous <= n <= usable // 700
        assert n == 0 or n * 700 + 2.3263 * math.sqrt(n) * 400 <= usable * 1.0001
        previous = n
    assert previous > 500


def test_the_worst_case_figure_is_a_floor_and_one_block_per_sequence_a_ceiling():
    wide = FootprintMoments(mean_tokens=1000.0, std_tokens=20_000.0)
    assert max_concurrency_at_overflow(160_000, 16, wide, 0.01) < 40
    assert max_concurrency_at_overflow(160_000, 16, wide, 0.01, worst_case=40) == 40
    # Sequences shorter than a block still take one block each.
    tiny = FootprintMoments(mean_tokens=10.0, std_tokens=1.0)
    assert max_concurrency_at_overflow(128 * 11, 128, tiny, 0.01) == 10


def test_a_smaller_overflow_probability_fits_fewer_sequences():
    moments = FootprintMoments(mean_tokens=700.0, std_tokens=400.0)
    loose, strict = (max_concurrency_at_overflow(200_000, 16, moments, p) for p in (0.1, 0.001))
    assert strict < loose < 200_000 // 700


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_occupancy_plans_at_least_the_worst_case(name):
    preset = preset_within_context(PRESETS[name], 2048)
    worst = planned_max_num_seqs(250_000, 16, preset, "worst_case")
    occupancy = planned_max_num_seqs(250_000, 16, preset, "occupancy")
    assert occupancy > worst
    with_drafts = planned_max_num_seqs(250_000, 16, preset, "occupancy", extra_tokens_per_seq=64)
    assert with_drafts < occupancy


@pytest.mark.parametrize("call", [
    lambda: max_concurrency_at_overflow(1000, 16, FootprintMoments(10.0, 1.0), 0.0),
    lambda: max_concurrency_at_overflow(1000, 16, FootprintMoments(10.0, 1.0), 0.6),
    lambda: max_concurrency_at_overflow(-1, 16, FootprintMoments(10.0, 1.0), 0.01),
    lambda: max_concurrency_at_overflow(1000, 0, FootprintMoments(10.0, 1.0), 0.01),
    lambda: FootprintMoments(0.0, 1.0),
    lambda: FootprintMoments(10.0, -1.0),
    lambda: FootprintMoments.from_requests([], 16),
    lambda: FootprintMoments.from_requests([(10, 0)], 16),
    lambda: FootprintMoments.from_requests([(10, 5)], 0),
    lambda: planned_max_num_seqs(1000, 16, PRESETS["mixed"], "average"),
])
def test_bad_input_is_refused(call):
    with pytest.raises(ValueError):
        call()
