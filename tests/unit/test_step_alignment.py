"""A delay before the engine, request by request (`autoscaling.simulator.step_alignment`), on an engine stepping
every 10 ms: the same delay on every request shifts the whole schedule and costs each exactly the delay; a probe
delayed 3 ms alone pays nothing where the step in progress had more than 3 ms left and a whole step where it had
less (3 phases in 10)."""
from __future__ import annotations

import pytest

from autoscaling.simulator.replica import EngineConfig
from autoscaling.simulator.step_alignment import delayed_ttft_differences, difference_percentiles_ms
from autoscaling.simulator.step_model import StepModel

STEP_S = 0.010
EVERY_STEP_ALIKE = StepModel(base_s=STEP_S, per_decode_seq_s=0.0, per_prefill_token_s=0.0, per_context_token_s=0.0)


def _probes_at_phases() -> list[tuple[float, int, int]]:
    """A long request keeping the engine stepping from 0 s (boundaries on multiples of 10 ms), then one short
    probe per phase of a step (0.5, 1.5, ... 9.5 ms), each in its own tenth of a second."""
    return [(0.0, 1, 100_000)] + [(0.1 * k + (k - 0.5) * 0.001, 1, 1) for k in range(1, 11)]


def test_a_delay_every_request_shares_shifts_the_schedule_and_costs_each_the_delay():
    arrivals = _probes_at_phases()
    differences = delayed_ttft_differences(EVERY_STEP_ALIKE, EngineConfig(), arrivals, [0.003] * len(arrivals))
    assert differences == pytest.approx([0.003] * len(arrivals))


def test_a_probe_delayed_alone_pays_a_whole_step_where_the_delay_carries_it_past_a_boundary():
    arrivals = _probes_at_phases()
    differences = delayed_ttft_differences(EVERY_STEP_ALIKE, EngineConfig(), arrivals, [0.0] + [0.003] * 10)[1:]
    assert [round(d * 1000, 3) for d in differences] == [0.0] * 7 + [10.0] * 3  # phases 7.5, 8.5, 9.5 ms
    assert sum(differences) / len(differences) == pytest.approx(0.003)


def test_no_delay_changes_nothing_and_the_delays_must_match_the_arrivals():
    arrivals = _probes_at_phases()
    assert set(delayed_ttft_differences(EVERY_STEP_ALIKE, EngineConfig(), arrivals, [0.0] * len(arrivals))) == {0.0}
    with pytest.raises(ValueError, match="2 delays for 11 arrivals"):
        delayed_ttft_differences(EVERY_STEP_ALIKE, EngineConfig(), arrivals, [0.0, 0.0])


def test_difference_percentiles_are_in_milliseconds():
    assert difference_percentiles_ms([0.0] * 98 + [0.01] * 2) == {"p10": 0.0, "p50": 0.0, "p90": 0.0, "p99": 10.0}
