"""Use-case presets."""

import math
from dataclasses import FrozenInstanceError

import pytest

from serve_app.memory.presets import PRESETS, UseCasePreset, get_preset


def test_four_presets_available():
    assert set(PRESETS) == {"interactive", "mixed", "batch", "long-form"}
    for name, preset in PRESETS.items():
        assert get_preset(name) is preset


def test_lookup_normalises_case_and_underscore():
    assert get_preset(" Long_Form ").name == "long-form"


def test_unknown_preset_lists_known_names():
    with pytest.raises(ValueError) as err:
        get_preset("realtime")
    for name in ("batch", "interactive", "long-form", "mixed"):
        assert name in str(err.value)


def test_slo_ordering_reflects_use_cases():
    assert get_preset("interactive").ttft_s < get_preset("mixed").ttft_s < get_preset("batch").ttft_s
    assert get_preset("interactive").tpot_s < get_preset("batch").tpot_s
    assert get_preset("long-form").output_len_p95 == max(p.output_len_p95 for p in PRESETS.values())


def test_lengths_are_consistent():
    for p in PRESETS.values():
        assert 0 < p.prompt_len_mean <= p.prompt_len_p95
        assert 0 < p.output_len_mean <= p.output_len_p95
        assert p.p95_sequence_len == p.prompt_len_p95 + p.output_len_p95


def test_invalid_preset_rejected_and_presets_frozen():
    with pytest.raises(ValueError, match="prompt"):
        UseCasePreset("x", 1.0, 0.1, 600, 500, 10, 20, 8)
    with pytest.raises(ValueError, match="SLO"):
        UseCasePreset("x", 0.0, 0.1, 10, 50, 10, 20, 8)
    with pytest.raises(FrozenInstanceError):
        get_preset("batch").ttft_s = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("mean, p95", [(512, 1536), (256, 512), (2048, 4096), (100, 100)])
def test_lognormal_sigma_gives_the_stated_mean_and_p95(mean, p95):
    from statistics import NormalDist

    from serve_app.memory.presets import lognormal_sigma

    sigma = lognormal_sigma(mean, p95)
    mu = math.log(mean) - sigma * sigma / 2
    assert math.exp(mu + sigma * sigma / 2) == pytest.approx(mean)
    assert math.exp(mu + NormalDist().inv_cdf(0.95) * sigma) == pytest.approx(p95)
    assert math.exp(mu) <= mean * (1 + 1e-12)  # the root whose median lies below the mean


def test_lognormal_sigma_refuses_a_p95_no_lognormal_has():
    from serve_app.memory.presets import lognormal_sigma

    with pytest.raises(ValueError, match="no log-normal"):
        lognormal_sigma(100, 400)
    with pytest.raises(ValueError):
        lognormal_sigma(200, 100)
