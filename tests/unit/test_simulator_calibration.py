"""The fitted simulator against recorded H100 runs it was not fitted on.

Tolerances (relative to the measurement): output throughput 10%, mean TPOT 10%, TTFT p99 15%,
TTFT p50 25% (the 512-prompt burst's median is the worst case, +24%). Not asserted, and a known
gap: the high-priority class's TTFT in the flood (predicted ~45% low), which is dominated by the
vLLM API server's own queueing under 8,000 streamed tokens/s that the model does not include.
"""
import numpy as np
import pytest

from autoscaling.simulator.calibration import predict_priority_run, predict_serving_run
from autoscaling.simulator.fit import _p99_features, closed_loop, fit_profile, load_sweep
from autoscaling.simulator.step_model import StepFeatures, StepModel
from autoscaling.simulator.fit import PROFILE
from serve_app.statistics import percentile, tpot_s

TOLERANCE = {"output_tok_s": 0.10, "tpot_mean_s": 0.10, "ttft_p99_s": 0.15, "ttft_p50_s": 0.25}


@pytest.fixture(scope="module")
def fitted():
    return fit_profile()


def _assert_within(predicted: dict, measured: dict, keys) -> None:
    errors = {k: predicted[k] / measured[k] - 1 for k in keys}
    bad = {k: f"{100 * e:+.1f}% (tolerance {100 * TOLERANCE[k]:.0f}%)" for k, e in errors.items()
           if abs(e) > TOLERANCE[k]}
    assert not bad, bad


def test_saved_profile_is_the_fit_of_the_recorded_sweep(fitted):
    model, _ = fitted
    saved = StepModel.load(PROFILE)
    np.testing.assert_allclose(saved.coefficients(), model.coefficients(), rtol=1e-9)
    assert "benchmarks/results/batch_sweep_h100/batch_sweep_profile.json" in saved.meta["sources"]


def test_priority_flood_low_class_and_saturated_burst(fitted):
    predictions = predict_priority_run(*fitted)
    _assert_within(*predictions["mix_low"], TOLERANCE)
    _assert_within(*predictions["saturated"], TOLERANCE)
    high_predicted, high_measured = predictions["mix_high"]
    _assert_within(high_predicted, high_measured, ["output_tok_s", "tpot_mean_s"])


def test_default_vllm_server_run_with_kv_preemption(fitted):
    predicted, measured = predict_serving_run(*fitted)
    assert predicted["preemptions"] > 0  # 512 x 512 tokens do not fit 136k KV tokens
    _assert_within(predicted, measured, TOLERANCE)


@pytest.mark.parametrize("held_out", [16, 64, 128])
def test_held_out_batch_size_of_the_sweep(held_out, fitted):
    model, engine = fit_profile(exclude_batch_sizes=[held_out])
    assert held_out not in model.meta["batch_sizes"]
    point = next(p for p in load_sweep()[0] if p.batch_size == held_out)
    runs = closed_loop(model, engine, held_out, point.num_prompts, 256, 256)
    throughput = point.num_prompts * 256 / max(r.finish_s for r in runs)
    tpot_p99 = percentile([tpot_s(r.finish_s - r.arrival_s, r.first_token_s - r.arrival_s, 256) for r in runs], 99)
    ttft_p99 = percentile([r.first_token_s - r.arrival_s for r in runs], 99)
    assert throughput == pytest.approx(point.output_tokens_per_s, rel=0.10)
    assert tpot_p99 == pytest.approx(point.tpot_p99_s, rel=0.10)
    assert ttft_p99 == pytest.approx(point.ttft_p99_s, rel=0.15)


def test_fitted_p99_is_the_shared_percentile_of_the_requests():
    # The sweep's p99s are linear percentiles (serve_app.statistics), so the fit reads its requests' features
    # at the same interpolated rank, not at the nearest rank.
    values = [7.0, 2.0, 10.0, 1.0, 5.0, 9.0, 3.0, 8.0, 4.0, 6.0]  # one latency per request, in request order
    at_p99 = _p99_features([StepFeatures(steps=v, requests=1) for v in values], values)
    assert at_p99.steps == pytest.approx(percentile(values, 99))  # 9.91, where the nearest rank reads 10
    assert at_p99.requests == pytest.approx(1.0)
