"""The simulator's step model refitted to one GPU's open-loop runs of vLLM alone.

The shipped profile was fitted on an H100 (`fit.py`: closed-loop batch sweeps of 256 in / 256 out). The
H200 runs of issue 19 are open loop, with the presets' log-normal lengths, at rates from 0.65x to 1.4x of
capacity: `controller_h200.py`'s rate probes of vLLM's defaults, each with its TTFT and TPOT percentiles and
SLO attainment. The same arrivals are replayed through one simulated replica (vLLM's scheduler, every request
admitted), and the H100 coefficients are scaled, one at a time (coordinate descent in log space), to the
scales that reproduce them best. On the H100 profile the simulator ran the mixed preset at 30.1 req/s with a
TTFT p50 of 0.66 s and a mean TPOT of 137 ms, where the H200 measured 0.36 s and a TPOT p50 of 57 ms: a
window policy tuned on it was tuned for another machine.

Pure: no GPU, no I/O (benchmarks/fit_gpu_profile.py reads the runs and writes the profile).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from autoscaling.bench.window_overload import Scenario, by_outcome, engine_alone_latencies
from autoscaling.simulator.replica import EngineConfig
from autoscaling.simulator.step_model import FEATURES, StepModel
from serve_app.memory.presets import get_preset
from serve_app.statistics import percentile

# The figures each run is compared on; attainment besides (a share, compared by difference).
LATENCY_FIGURES = ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s")
# What moves together: the per-step base and per-sequence terms (a decode step's cost), the prefill term, the
# attention-context term, and the frontend's per-request overhead.
SCALED_GROUPS: dict[str, tuple[str, ...]] = {
    "decode": ("base_s", "per_decode_seq_s"),
    "prefill": ("per_prefill_token_s",),
    "context": ("per_context_token_s",),
    "frontend": ("frontend_overhead_s",),
}
SEARCH_STEPS = (2.0, 1.41, 1.19, 1.09, 1.04, 1.02)


@dataclass(frozen=True)
class MeasuredRun:
    """One open-loop run of vLLM alone: the preset's workload at `rate_rps` for `window_s` of arrivals."""

    preset: str
    rate_rps: float
    window_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    tpot_p99_s: float
    slo_attainment: float

    @property
    def label(self) -> str:
        return f"{self.preset} @ {self.rate_rps:.1f} req/s"


def measured_runs(part: Mapping[str, Any], window_s: float) -> list[MeasuredRun]:
    """A preset part's rate probes of vLLM's defaults (carried ones too: the same GPU kind)."""
    preset = part["preset"]
    return [MeasuredRun(preset, p["rate_rps"], window_s, p["ttft_p50_s"], p["ttft_p99_s"], p["tpot_p50_s"],
                        p["tpot_p99_s"], p["slo_attainment"]) for p in part.get("rate_probes") or []]


def simulated(model: StepModel, engine: EngineConfig, run: MeasuredRun, seed: int = 1) -> dict[str, float]:
    """The run's figures as the simulator gives them (its own draw of the preset's arrivals and lengths)."""
    latencies = engine_alone_latencies(Scenario(run.rate_rps, window_s=run.window_s, preset=run.preset, seed=seed),
                                       model, engine)
    ttft = [t for t, _ in latencies]
    decode = [p for _, p in latencies if p is not None]
    slo = get_preset(run.preset)
    return {"ttft_p50_s": percentile(ttft, 50), "ttft_p99_s": percentile(ttft, 99),
            "tpot_p50_s": percentile(decode, 50), "tpot_p99_s": percentile(decode, 99),
            "slo_attainment": by_outcome(latencies, slo.ttft_s, slo.tpot_s)["met"]}


def misfit(sim: Mapping[str, float], run: MeasuredRun) -> float:
    """Mean squared log ratio over the latency figures, plus the attainment's squared difference: a share
    of the SLO met off by 0.1 weighs as every latency figure off by 10%."""
    logs = [math.log(sim[f] / getattr(run, f)) ** 2 for f in LATENCY_FIGURES if sim[f] and getattr(run, f)]
    return sum(logs) / len(logs) + (sim["slo_attainment"] - run.slo_attainment) ** 2


def scaled(model: StepModel, scales: Mapping[str, float]) -> StepModel:
    values = {name: getattr(model, name) for name in FEATURES}
    for group, factor in scales.items():
        for name in SCALED_GROUPS[group]:
            values[name] *= factor
    return replace(model, **values)


@dataclass(frozen=True)
class Fit:
    scales: dict[str, float]
    model: StepModel
    total_misfit: float
    per_run: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        model = asdict(self.model)
        model.pop("meta", None)
        return {"scales": self.scales, "coefficients": model, "total_misfit": self.total_misfit,
                "per_run": self.per_run}


def total_misfit(model: StepModel, engine: EngineConfig, runs: Sequence[MeasuredRun]) -> float:
    return sum(misfit(simulated(model, engine, run), run) for run in runs)


def fit(base: StepModel, engine: EngineConfig, runs: Sequence[MeasuredRun], *,
        groups: Iterable[str] = tuple(SCALED_GROUPS), steps: Sequence[float] = SEARCH_STEPS,
        progress: Callable[[str], None] | None = None) -> Fit:
    """Coordinate descent on the groups' scale factors (log space): at each step size, every group is moved
    up or down while that lowers the total misfit, then the step shrinks."""
    if not runs:
        raise ValueError("no measured runs to fit")
    groups = tuple(groups)
    scales = dict.fromkeys(groups, 1.0)
    best = total_misfit(base, engine, runs)
    for step in steps:
        improved = True
        while improved:
            improved = False
            for group in groups:
                for factor in (step, 1 / step):
                    trial = {**scales, group: scales[group] * factor}
                    value = total_misfit(scaled(base, trial), engine, runs)
                    if value < best - 1e-9:
                        scales, best, improved = trial, value, True
                        break
        if progress is not None:
            progress(f"step x{step:g}: misfit {best:.4f}, scales " +
                     ", ".join(f"{g} {s:.3f}" for g, s in scales.items()))
    model = scaled(base, scales)
    per_run = [{"run": run.label, "measured": {f: getattr(run, f) for f in (*LATENCY_FIGURES, "slo_attainment")},
                "simulated": simulated(model, engine, run)} for run in runs]
    return Fit(scales, model, best, per_run)


# How close the refitted simulator must come to a run it was fitted to (the unit test's bounds too).
ATTAINMENT_TOLERANCE = 0.1
TPOT_P50_TOLERANCE = 0.2


def fit_goals(per_run: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """summary.json's goals: per run, the simulated SLO attainment within ATTAINMENT_TOLERANCE of the
    measured and the simulated TPOT p50 within TPOT_P50_TOLERANCE of it."""
    goals = []
    for row in per_run:
        measured, sim = row["measured"], row["simulated"]
        off = abs(sim["slo_attainment"] - measured["slo_attainment"])
        goals.append({"name": f"{row['run']}: simulated SLO attainment against measured {measured['slo_attainment']:.3f}",
                      "measured": round(sim["slo_attainment"], 4), "goal": f"within +-{ATTAINMENT_TOLERANCE}",
                      "met": off <= ATTAINMENT_TOLERANCE})
        ratio = sim["tpot_p50_s"] / measured["tpot_p50_s"]
        goals.append({"name": f"{row['run']}: simulated TPOT p50 against measured {measured['tpot_p50_s']:.4f} s",
                      "measured": round(sim["tpot_p50_s"], 5), "goal": f"within +-{TPOT_P50_TOLERANCE:.0%}",
                      "met": abs(ratio - 1) <= TPOT_P50_TOLERANCE})
    return goals

