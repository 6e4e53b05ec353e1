"""Predictions of recorded single-replica GPU runs, to check the fitted simulator against them.

Each `predict_*` replays a recorded `vllm bench serve` run through one simulated `Replica` and
returns (predicted, measured) metric dicts with the same keys. Held out from the fit: the
priority run (`benchmarks/results/priority_h100/priority_vs_vllm_vllm_run3_old_overlap.json`: a 60 req/s flood
plus 2 req/s high priority, and a 512-prompt burst) and the server-mode run
(`benchmarks/results/serving_vs_vllm_h100.json`: 512 prompts at once, vLLM's default
max_num_seqs 1024, so the KV cache overflows and requests are preempted).
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import replace
from pathlib import Path

from autoscaling.loadtest.arrivals import poisson
from autoscaling.simulator.fit import REPO, closed_loop
from autoscaling.simulator.replica import EngineConfig, EngineRequest, Replica
from autoscaling.simulator.step_model import StepModel
from serve_app.statistics import mean, percentile, tpot_s

PRIORITY_RUN = REPO / "benchmarks/results/priority_h100/priority_vs_vllm_vllm_run3_old_overlap.json"
SERVING_RUN = REPO / "benchmarks/results/serving_vs_vllm_h100.json"
SERVING_RAW = REPO / "benchmarks/results/serving_vs_vllm_h100_vllm_raw.json"
VLLM_H100_DEFAULT_MAX_NUM_SEQS = 1024  # vLLM's default for an OpenAI server on a >= 70 GiB GPU (arg_utils.py)


def open_loop(model: StepModel, engine: EngineConfig,
              arrivals: list[tuple[float, int, int, int, str]]) -> list[EngineRequest]:
    """Requests `(arrival_s, prompt_len, output_len, priority, tag)` through one replica; all finished."""
    replica = Replica("r0", model, engine)
    pending = sorted(arrivals, key=lambda a: a[0])
    done: list[EngineRequest] = []
    i = 0
    while i < len(pending) or replica.step_end_s is not None:
        if replica.step_end_s is None or (i < len(pending) and pending[i][0] <= replica.step_end_s):
            t = pending[i][0]
            while i < len(pending) and pending[i][0] == t:  # simultaneous arrivals share a step
                _, prompt, output, priority, tag = pending[i]
                replica.add(EngineRequest(f"q{i}", prompt, output, priority, tag=tag), t)
                i += 1
            replica.start_if_idle(t)
        else:
            done.extend(replica.complete_step())
    return done


def _summary(done: list[EngineRequest]) -> dict[str, float]:
    ttft = [r.first_token_s - r.arrival_s for r in done]
    tpot = [tpot_s(r.finish_s - r.arrival_s, t, r.output_len) for r, t in zip(done, ttft)]
    window = max(r.finish_s for r in done) - min(r.arrival_s for r in done)
    return {"output_tok_s": sum(r.output_len for r in done) / window,
            "ttft_p50_s": percentile(ttft, 50), "ttft_p99_s": percentile(ttft, 99),
            "tpot_mean_s": mean(t for t in tpot if t is not None)}


def _engine_of(server_command: str, base: EngineConfig) -> EngineConfig:
    def flag(name: str, default: int) -> int:
        match = re.search(rf"--{name} (\d+)", server_command)
        return int(match.group(1)) if match else default
    return replace(base, max_num_seqs=flag("max-num-seqs", VLLM_H100_DEFAULT_MAX_NUM_SEQS),
                   max_num_batched_tokens=flag("max-num-batched-tokens", 8192))


def predict_priority_run(model: StepModel, base: EngineConfig, path: Path = PRIORITY_RUN) -> dict[str, tuple]:
    """The flood (both classes from t=0, Poisson, vLLM priority scheduling) and the saturated burst."""
    run = json.loads(path.read_text())
    engine = _engine_of(run["server_command"], base)
    arrivals = []
    for spec in run["load"]["classes"].values():
        count = run["mix"]["classes"][spec["name"]]["num_prompts"]
        offsets = poisson(spec["rate"]).offsets(random.Random(spec["seed"]), duration_s=None, num_requests=count)
        arrivals += [(t, spec["input_len"], spec["output_len"], spec["vllm_priority"], spec["name"]) for t in offsets]
    done = open_loop(model, engine, arrivals)
    out: dict[str, tuple] = {}
    for name in run["load"]["classes"]:
        measured = run["mix"]["classes"][name]
        out[f"mix_{name}"] = (_summary([r for r in done if r.tag == name]), _measured(measured))
    saturated = run["saturated"]["summary"]
    prompts = saturated["num_prompts"]
    burst = closed_loop(model, engine, prompts, prompts, 256, 256)
    burst_requests = [EngineRequest(f"b{i}", 256, 256) for i in range(len(burst))]
    for req, times in zip(burst_requests, burst):
        req.arrival_s, req.first_token_s, req.finish_s = times.arrival_s, times.first_token_s, times.finish_s
    out["saturated"] = (_summary(burst_requests), _measured(saturated))
    return out


def _measured(summary: dict) -> dict[str, float]:
    return {"output_tok_s": summary["output_tok_s"], "ttft_p50_s": summary["ttft_p50_ms"] / 1000,
            "ttft_p99_s": summary["ttft_p99_ms"] / 1000, "tpot_mean_s": summary["tpot_mean_ms"] / 1000}


def predict_serving_run(model: StepModel, base: EngineConfig) -> tuple[dict[str, float], dict[str, float]]:
    """512 prompts of 256/256 at once against `vllm serve` with its defaults (preempting)."""
    run = json.loads(SERVING_RUN.read_text())["vllm"]
    raw = json.loads(SERVING_RAW.read_text())
    engine = _engine_of(run["server_command"], base)
    n = raw["num_prompts"]
    done = open_loop(model, engine, [(0.0, 256, 256, 0, "burst")] * n)
    measured = {"output_tok_s": raw["output_throughput"], "ttft_p50_s": raw["p50_ttft_ms"] / 1000,
                "ttft_p99_s": raw["p99_ttft_ms"] / 1000, "tpot_mean_s": raw["mean_tpot_ms"] / 1000}
    predicted = _summary(done)
    predicted["preemptions"] = float(sum(r.preemptions for r in done))
    return predicted, measured
