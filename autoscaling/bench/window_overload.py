"""Our router's adaptive window against the engine alone, one replica of the calibrated simulator under an
open-loop overload, from a fresh app and after a burst (issue 19: on an H200 the window held our app to
68% of the mixed preset's requests within the SLO where `vllm serve` alone met 85%, the window still cut
from the closed-loop run before), and under a sustained overload, where a 30 s run shows only the ramp. The engine alone is vLLM's scheduler with every request admitted at
once; ours is the real `RouterCore` in front of the same engine (`autoscaling.simulator.cluster`).
benchmarks/window_overload_sim.py does the I/O and the plots.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from autoscaling.loadtest.arrivals import poisson
from autoscaling.loadtest.preset_workload import preset_workload
from autoscaling.simulator.calibration import open_loop
from autoscaling.simulator.cluster import Cluster, ClusterConfig
from autoscaling.simulator.replica import EngineConfig
from autoscaling.simulator.step_model import StepModel
from autoscaling.simulator.workload import ClassLoad, SimRequest, generate
from serve_app.policy.priority_classes import PriorityClass, PriorityClasses
from serve_app.policy.router_core import RouterPolicy
from serve_app.statistics import slo_outcome, tpot_s

OUTCOMES = ("met", "ttft_only", "tpot_only", "both", "not_served")
# vLLM's default engine limits on an H200 and its KV allocation for the synthetic Llama-3-8B AWQ at an 8,192
# context, 0.9 utilization (975,232 tokens: benchmarks/results/controller_h200/), in 16-token blocks.
H200_LLAMA3_8B_ENGINE = EngineConfig(max_num_seqs=1024, max_num_batched_tokens=8192, num_kv_blocks=975_232 // 16)
# A queue deadline no run reaches: the window, not the router's refusals, decides who waits.
QUEUE_DEADLINE_S = 600.0


@dataclass(frozen=True)
class Scenario:
    """`burst` requests at t = 0 (a closed-loop run's worth of clients at once; 0: a fresh app), then
    `window_s` of Poisson arrivals at `rate_rps` from `gap_s`; only these are judged. `queue_deadline_s`:
    the class's queue deadline with the router's admission control on (None: off, and a deadline no run
    reaches, so that the window, not refusals, decides who waits)."""

    rate_rps: float
    burst: int = 0
    gap_s: float = 80.0
    window_s: float = 30.0
    preset: str = "mixed"
    max_model_len: int = 8192
    seed: int = 1
    queue_deadline_s: float | None = None

    @property
    def judged_from_s(self) -> float:
        return self.gap_s if self.burst else 0.0


def scenario_requests(scenario: Scenario) -> list[SimRequest]:
    wl = preset_workload(scenario.preset, scenario.max_model_len)
    load = {wl.class_name: ClassLoad(1.0, wl.prompt_len, wl.output_len)}
    burst = [replace(r, request_id=f"burst-{r.request_id}", arrival_s=0.0)
             for r in generate(poisson(1e6), load, seed=scenario.seed + 1000, num_requests=scenario.burst)
             ] if scenario.burst else []
    start = scenario.judged_from_s
    judged = [replace(r, arrival_s=start + r.arrival_s)
              for r in generate(poisson(scenario.rate_rps), load, seed=scenario.seed, duration_s=scenario.window_s)]
    return burst + judged


def by_outcome(latencies: Iterable[tuple[float | None, float | None] | None], ttft_slo_s: float,
               tpot_slo_s: float) -> dict[str, float]:
    """Shares of requests (TTFT, TPOT), or None where not served, by which SLO target each missed."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for pair in latencies:
        if pair is None:
            counts["not_served"] += 1
            continue
        counts[slo_outcome(pair[0], pair[1], ttft_slo_s, tpot_slo_s)] += 1
    total = sum(counts.values())
    return {k: v / total if total else 0.0 for k, v in counts.items()}


def _latencies(arrival_s: float, first_token_s: float, finish_s: float, output_len: int) -> tuple[float, float | None]:
    ttft = first_token_s - arrival_s
    return ttft, tpot_s(finish_s - arrival_s, ttft, output_len)


def engine_alone_latencies(scenario: Scenario, model: StepModel, engine: EngineConfig) -> list[tuple[float, float | None]]:
    """Every request straight into one engine (vLLM's scheduler, first come first served): each judged
    request's (TTFT, TPOT)."""
    requests = scenario_requests(scenario)
    done = open_loop(model, engine, [(r.arrival_s, r.prompt_len, r.output_len, 0, r) for r in requests])
    return [_latencies(e.tag.arrival_s, e.first_token_s, e.finish_s, e.tag.output_len)
            for e in done if e.tag.arrival_s >= scenario.judged_from_s]


def engine_alone(scenario: Scenario, model: StepModel, engine: EngineConfig) -> dict[str, float]:
    """`engine_alone_latencies` judged by the preset's SLO (`by_outcome`)."""
    preset = preset_workload(scenario.preset, scenario.max_model_len).preset
    return by_outcome(engine_alone_latencies(scenario, model, engine), preset.ttft_s, preset.tpot_s)


# Our router as it was before adaptive LIFO and the TPOT set-point: oldest first in a class, the window's TPOT
# average held at the target itself.
BEFORE_LIFO_AND_SETPOINT: dict[str, Any] = {"newest_first_after": None, "window_tuning": {"tpot_setpoint": 1.0}}


def behind_our_router(scenario: Scenario, model: StepModel, engine: EngineConfig,
                      window_tuning: Mapping[str, Any] | None = None,
                      router: Mapping[str, Any] | None = None) -> tuple[dict[str, float], list[dict]]:
    """The same requests through `RouterCore` (one class with the preset's SLO) to the same engine; the
    outcome shares and the timeline, each sample with the replica's window and cap. `router`: settings
    of the router's own (e.g. BEFORE_LIFO_AND_SETPOINT) under `window_tuning`'s knobs. With admission on
    (`scenario.queue_deadline_s`) the shares also split the unserved: refused at once (429) or after
    waiting in the queue (503)."""
    preset = preset_workload(scenario.preset, scenario.max_model_len).preset
    admission = scenario.queue_deadline_s is not None
    classes = PriorityClasses([PriorityClass(preset.name, 0, preset.ttft_s, preset.tpot_s,
                                             scenario.queue_deadline_s if admission else QUEUE_DEADLINE_S)])
    settings = dict(router or {})
    settings["window_tuning"] = {**settings.get("window_tuning", {}), **(window_tuning or {})}
    if not admission:  # its warm-up never ends
        settings["admission_warmup_completions"] = 10**9
    policy = RouterPolicy(**settings)
    config = ClusterConfig(classes, engine=engine, router=policy, engine_priority=False, timeline_period_s=2.0)
    cluster = _WindowSampling(config, model)
    result = cluster.run(iter(scenario_requests(scenario)), until_s=scenario.judged_from_s + 3600)
    outcomes = [o for o in result.outcomes if o.request.arrival_s >= scenario.judged_from_s]
    judged = [None if o.status != 200 else _latencies(o.request.arrival_s, o.first_token_s, o.finish_s,
                                                       o.request.output_len) for o in outcomes]
    shares = by_outcome(judged, preset.ttft_s, preset.tpot_s)
    if admission and outcomes:
        shares["refused_at_once"] = sum(o.status == 429 for o in outcomes) / len(outcomes)
        shares["refused_after_waiting"] = sum(o.status == 503 for o in outcomes) / len(outcomes)
    return shares, result.timeline


class _WindowSampling(Cluster):
    """The cluster with each timeline sample carrying the router's window and cap of every replica."""

    def _on_timeline(self) -> None:
        super()._on_timeline()
        replicas = self.router_stats()["replicas"]
        self._timeline[-1]["windows"] = {rid: {"window": r["window"], "window_cap": r["window_cap"]}
                                        for rid, r in replicas.items()}


def attainment_goals(results: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """summary.json's goals: per scenario and offered rate, our router's share of requests within the SLO
    against the engine alone's (benchmarks/index.yaml: at least it, at every rate)."""
    return [{"name": f"{r['scenario']} at {r['rate_rps']:g} req/s: our router's SLO attainment against vLLM alone's",
             "measured": round(r["our_router"]["met"], 4), "goal": f">= {r['engine_alone']['met']:.4f}",
             "met": r["our_router"]["met"] >= r["engine_alone"]["met"]} for r in results]

