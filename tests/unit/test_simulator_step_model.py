"""The step model's fit recovers known coefficients, and stays non-negative."""
import random

import numpy as np
import pytest

from autoscaling.simulator.step_model import StepFeatures, StepModel, fit_step_model, nonnegative_least_squares


def _synthetic(truth: StepModel, n: int, seed: int, noise: float = 0.0) -> list[tuple[StepFeatures, float]]:
    rng = random.Random(seed)
    observations = []
    for _ in range(n):
        steps = rng.randint(1, 300)
        f = StepFeatures(steps=steps, decode_seqs=steps * rng.randint(0, 256), prefill_tokens=rng.randint(0, 8192 * 4),
                         context_tokens=steps * rng.randint(0, 200_000), requests=rng.choice([0, 1]))
        y = truth.predict(f) * (1 + rng.gauss(0, noise))
        observations.append((f, y))
    return observations


def test_fit_recovers_known_coefficients_exactly_without_noise():
    truth = StepModel(base_s=0.004, per_decode_seq_s=8e-5, per_prefill_token_s=2.5e-5, per_context_token_s=1.5e-7,
                      frontend_overhead_s=0.013)
    fitted = fit_step_model(_synthetic(truth, 40, seed=1))
    np.testing.assert_allclose(fitted.coefficients(), truth.coefficients(), rtol=1e-6)


def test_fit_with_noise_is_close_and_a_pinned_coefficient_is_kept():
    truth = StepModel(base_s=0.004, per_decode_seq_s=8e-5, per_prefill_token_s=2.5e-5, per_context_token_s=1.5e-7,
                      frontend_overhead_s=0.013)
    fitted = fit_step_model(_synthetic(truth, 400, seed=2, noise=0.01))
    np.testing.assert_allclose(fitted.coefficients()[:4], truth.coefficients()[:4], rtol=0.05)
    pinned = fit_step_model(_synthetic(truth, 60, seed=3), fixed={"per_context_token_s": 1.5e-7})
    assert pinned.per_context_token_s == 1.5e-7
    assert pinned.per_decode_seq_s == pytest.approx(8e-5, rel=1e-6)


def test_nnls_never_returns_a_negative_coefficient():
    a = np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]])
    b = np.array([3.0, 2.0, 1.0])  # unconstrained slope is -1
    x = nonnegative_least_squares(a, b)
    assert x[1] == 0.0 and x[0] == pytest.approx(2.0)


def test_step_time_and_features_agree():
    model = StepModel(0.004, 8e-5, 2.5e-5, 1.5e-7, 0.01)
    one = StepFeatures(steps=1, decode_seqs=100, prefill_tokens=512, context_tokens=40_000)
    assert model.predict(one) == pytest.approx(model.step_time_s(100, 512, 40_000))
    assert model.predict(one + one) == pytest.approx(2 * model.step_time_s(100, 512, 40_000))
