"""Fit the step model to the H100 batch-size sweep and save it as a replica profile.

The sweep (`benchmarks/batch_size_sweep.py`) ran `vllm bench serve` closed-loop: B requests in
flight, 256 prompt / 256 output tokens, N prompts, max_num_seqs 256, 8192 tokens per step. Its
schedule does not depend on step times (all of a wave's requests arrive together), so we replay
it through `Replica` once, record every step's features, and express each recorded latency (TTFT
p99, TPOT p99, e2e p99, run duration from throughput) as summed step features: an affine model.

    python -m autoscaling.simulator.fit            # writes profiles/h100_llama2_7b_awq.json
"""
from __future__ import annotations

import argparse
import bisect
import json
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoscaling.simulator.replica import EngineConfig, EngineRequest, Replica
from autoscaling.simulator.step_model import StepFeatures, StepModel, fit_step_model
from serve_app.statistics import percentile

REPO = Path(__file__).resolve().parents[2]
SWEEP_DIR = REPO / "benchmarks/results/batch_sweep_h100"
KV_CAPACITY = REPO / "benchmarks/results/kv_capacity_h100.json"
PROFILE = Path(__file__).resolve().parent / "profiles/h100_llama2_7b_awq.json"
# Only to order requests while replaying (which request is the p99); the fit does not depend on it.
NOMINAL = StepModel(base_s=0.004, per_decode_seq_s=5e-5, per_prefill_token_s=5e-6, per_context_token_s=1e-7)


@dataclass(frozen=True)
class SweepPoint:
    batch_size: int
    num_prompts: int
    output_tokens_per_s: float
    ttft_p99_s: float
    tpot_p99_s: float
    e2e_p99_s: float


@dataclass(frozen=True)
class RequestTimes:
    arrival_s: float
    first_token_s: float
    finish_s: float
    output_len: int


def load_sweep(sweep_dir: Path = SWEEP_DIR) -> tuple[list[SweepPoint], dict]:
    """The sweep's points and its summary (commands, engine limits)."""
    profile = json.loads((sweep_dir / "batch_sweep_profile.json").read_text())
    summary = json.loads((sweep_dir / "batch_sweep_summary.json").read_text())
    points = []
    for p in profile["points"]:
        command = summary["bench_commands"][str(p["batch_size"])]
        num_prompts = int(re.search(r"--num-prompts (\d+)", command).group(1))
        points.append(SweepPoint(p["batch_size"], num_prompts, p["output_tokens_per_s"], p["ttft_p99_s"],
                                 p["tpot_p99_s"], p["request_latency_p99_s"]))
    return points, {**summary, "input_len": profile["input_len"], "output_len": profile["output_len"]}


def engine_config_from(summary: dict, kv_capacity_path: Path = KV_CAPACITY, shape: str = "llama2-7b") -> EngineConfig:
    """Engine limits of the sweep's server command and the KV blocks vLLM allocated for `shape`."""
    command = summary["server_command"]
    kv = next(r for r in json.loads(kv_capacity_path.read_text())["results"] if r["shape"] == shape)
    return EngineConfig(max_num_seqs=int(re.search(r"--max-num-seqs (\d+)", command).group(1)),
                        max_num_batched_tokens=int(re.search(r"--max-num-batched-tokens (\d+)", command).group(1)),
                        num_kv_blocks=int(kv["vllm_num_blocks"]), block_size=int(kv["block_size"]))


def closed_loop(model, engine: EngineConfig, concurrency: int, num_prompts: int, input_len: int,
                output_len: int) -> list[RequestTimes]:
    """`vllm bench serve --max-concurrency B --request-rate inf` against one replica."""
    replica = Replica("r0", model, engine)
    sent, done, now = 0, [], 0.0
    while sent < min(concurrency, num_prompts):
        replica.add(EngineRequest(f"q{sent}", input_len, output_len), now)
        sent += 1
    replica.start_if_idle(now)
    while replica.step_end_s is not None:
        now = replica.step_end_s
        for req in replica.complete_step():
            done.append(RequestTimes(req.arrival_s, req.first_token_s, req.finish_s, req.output_len))
            if sent < num_prompts:
                replica.add(EngineRequest(f"q{sent}", input_len, output_len), now)
                sent += 1
        replica.start_if_idle(now)
    return done


class _RecordingModel:
    """Times steps with NOMINAL and keeps their cumulative features, to map times to features."""

    frontend_overhead_s = 0.0

    def __init__(self) -> None:
        self.end_times = [0.0]
        self.cumulative = [StepFeatures()]

    def step_time_s(self, decode_seqs: int, prefill_tokens: int, context_tokens: int) -> float:
        dt = NOMINAL.step_time_s(decode_seqs, prefill_tokens, context_tokens)
        self.end_times.append(self.end_times[-1] + dt)
        self.cumulative.append(self.cumulative[-1] + StepFeatures(1, decode_seqs, prefill_tokens, context_tokens))
        return dt

    def at(self, t: float) -> StepFeatures:
        i = bisect.bisect_left(self.end_times, t - 1e-12)
        return self.cumulative[i]


def _p99_features(features: list[StepFeatures], values: list[float]) -> StepFeatures:
    """The requests' step features combined as the p99 of `values` combines their latencies.

    The sweep's p99s are `serve_app.statistics.percentile`s (linear, as `vllm bench serve`); the
    model is linear in features, so interpolating features at the same rank predicts that p99.
    """
    order = np.argsort(values, kind="stable")
    rank = percentile(range(len(values)), 99)  # the (fractional) sorted position the p99 reads
    low = math.floor(rank)
    high, weight = min(low + 1, len(order) - 1), rank - low
    return features[order[low]].scaled(1 - weight) + features[order[high]].scaled(weight)


def sweep_observations(points: Iterable[SweepPoint], engine: EngineConfig, input_len: int,
                       output_len: int) -> list[tuple[StepFeatures, float]]:
    """Each point's TTFT p99, TPOT p99, e2e p99 and run duration as (step features, seconds)."""
    observations = []
    one_request = StepFeatures(requests=1)
    for point in points:
        rec = _RecordingModel()
        runs = closed_loop(rec, engine, point.batch_size, point.num_prompts, input_len, output_len)
        ttft = [rec.at(r.first_token_s) + rec.at(r.arrival_s).scaled(-1) + one_request for r in runs]
        e2e = [rec.at(r.finish_s) + rec.at(r.arrival_s).scaled(-1) + one_request for r in runs]
        tpot = [(e + t.scaled(-1)).scaled(1 / (output_len - 1)) for e, t in zip(e2e, ttft)]
        nominal = [NOMINAL.predict(f) for f in tpot]
        observations.append((_p99_features(ttft, [r.first_token_s - r.arrival_s for r in runs]), point.ttft_p99_s))
        observations.append((_p99_features(tpot, nominal), point.tpot_p99_s))
        observations.append((_p99_features(e2e, [r.finish_s - r.arrival_s for r in runs]), point.e2e_p99_s))
        duration_s = point.num_prompts * output_len / point.output_tokens_per_s
        observations.append((rec.cumulative[-1] + one_request, duration_s))
    return observations


def fit_profile(sweep_dir: Path = SWEEP_DIR, kv_capacity_path: Path = KV_CAPACITY,
                exclude_batch_sizes: Iterable[int] = ()) -> tuple[StepModel, EngineConfig]:
    """The step model fitted to the sweep (without `exclude_batch_sizes`) and the sweep's engine."""
    points, summary = load_sweep(sweep_dir)
    excluded = set(exclude_batch_sizes)
    engine = engine_config_from(summary, kv_capacity_path)
    used = [p for p in points if p.batch_size not in excluded]
    observations = sweep_observations(used, engine, summary["input_len"], summary["output_len"])
    meta = {"sources": [str(p.relative_to(REPO)) for p in (sweep_dir / "batch_sweep_profile.json",
                                                              sweep_dir / "batch_sweep_summary.json",
                                                              kv_capacity_path)],
            "batch_sizes": [p.batch_size for p in used], "engine": engine.__dict__,
            "model": "synthetic llama2-7b AWQ, vLLM 0.26, NVIDIA H100 80GB HBM3",
            "server_command": summary["server_command"],
            "fit": "non-negative least squares on relative error over TTFT p99, TPOT p99, e2e p99 and "
                   "run duration per batch size (autoscaling/simulator/fit.py)"}
    model = fit_step_model(observations, meta=meta)
    residuals = [model.predict(f) / y - 1 for f, y in observations]
    model.meta["relative_residuals"] = {"max_abs": float(np.max(np.abs(residuals))),
                                        "rms": float(np.sqrt(np.mean(np.square(residuals))))}
    return model, engine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROFILE)
    args = parser.parse_args(argv)
    model, _ = fit_profile()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(model.to_json() + "\n")
    print(model.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
