"""Issue 20's GPU ramp through the simulator (`autoscaling/simulator/`): the very requests a measured run
planned, the run's app config (classes, engine limits, autoscaling policy and settings), the measured
replica start time, and the H100 step-time profile rescaled so one simulated replica's closed-loop
capacity equals the one measured on the GPU. CPU only, no I/O but the profile read by the caller.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autoscaling.bench.ramp_comparison import QueueSample, RampRequest, Sample
from autoscaling.ray_policy import LLMAutoscalingPolicy
from autoscaling.simulator.autoscalers import LLMPolicyAutoscaler, RayDefaultAutoscaler, RayDefaultSettings
from autoscaling.simulator.cluster import Cluster, ClusterConfig, RequestOutcome
from autoscaling.simulator.replica import EngineConfig, EngineRequest, Replica
from autoscaling.simulator.step_model import FEATURES, StepModel
from autoscaling.simulator.workload import SimRequest
from serve_app.config import AppConfig
from serve_app.statistics import tpot_s

DRAIN_AFTER_S = 600.0  # simulated time after the last arrival for what is still queued or running


@dataclass(frozen=True)
class SimulatedRamp:
    requests: list[RampRequest]
    samples: list[Sample]  # (t_s, running, all replicas)
    queue: list[QueueSample]
    totals: dict[str, Any]  # the simulation's own: replica-seconds from each request to stop, steps, ...


def sim_requests(schedule: Sequence[Sequence[Any]]) -> list[SimRequest]:
    """`(send_offset_s, class, prompt_len, max_tokens)` rows, as a ramp saves its plan, in arrival order."""
    return [SimRequest(f"r{i}", float(t), str(name), int(prompt), int(output))
            for i, (t, name, prompt, output) in enumerate(sorted(schedule, key=lambda row: row[0]))]


def engine_config(config: AppConfig, num_kv_blocks: int | None) -> EngineConfig:
    """The engine limits the app ran with; KV blocks as vLLM reported them (else the simulator's default)."""
    engine = config.engine
    return EngineConfig(max_num_seqs=engine.max_num_seqs or EngineConfig.max_num_seqs,
                        max_num_batched_tokens=engine.max_num_batched_tokens or EngineConfig.max_num_batched_tokens,
                        num_kv_blocks=num_kv_blocks or EngineConfig.num_kv_blocks)


def autoscaler_for(config: AppConfig):
    """The simulator's stand-in for the policy `config` deployed, with the settings Serve was given."""
    serve = config.autoscaling.serve_autoscaling_config([c.name for c in config.priority_classes])
    if serve is None:
        raise ValueError("the config's autoscaling is off")
    if config.autoscaling.policy == "llm":
        return LLMPolicyAutoscaler(LLMAutoscalingPolicy(**serve["policy"]["policy_kwargs"]).settings)
    return RayDefaultAutoscaler(RayDefaultSettings(
        min_replicas=serve["min_replicas"], max_replicas=serve["max_replicas"],
        target_ongoing_requests=serve["target_ongoing_requests"], upscale_delay_s=serve["upscale_delay_s"],
        downscale_delay_s=serve["downscale_delay_s"], upscaling_factor=serve["upscaling_factor"],
        downscaling_factor=serve["downscaling_factor"]))


def closed_loop_capacity_rps(model: StepModel, engine: EngineConfig, lengths: Sequence[tuple[int, int]],
                             concurrency: int) -> float:
    """Requests/s one simulated replica completes with `concurrency` requests always open (the next sent
    when one finishes), over the time to the last completion, as the load driver measures its probe."""
    replica = Replica("probe", model, engine)
    sent, done, last_finish = 0, 0, 0.0
    while sent < min(concurrency, len(lengths)):
        replica.add(EngineRequest(f"p{sent}", *lengths[sent]), 0.0)
        sent += 1
    replica.start_if_idle(0.0)
    while replica.step_end_s is not None:
        now = replica.step_end_s
        for request in replica.complete_step():
            done, last_finish = done + 1, request.finish_s
            if sent < len(lengths):
                replica.add(EngineRequest(f"p{sent}", *lengths[sent]), now)
                sent += 1
        replica.start_if_idle(now)
    return done / last_finish if last_finish > 0 else 0.0


def scaled_model(model: StepModel, factor: float) -> StepModel:
    """Every step-time coefficient times `factor`: all simulated times scale by it, capacity by 1/factor."""
    if not factor > 0:
        raise ValueError(f"scale factor must be positive, got {factor}")
    meta = {**model.meta, "scaled_by": factor}
    return dataclasses.replace(model, **{name: getattr(model, name) * factor for name in FEATURES}, meta=meta)


def calibrated_model(model: StepModel, engine: EngineConfig, probe_lengths: Sequence[tuple[int, int]],
                     concurrency: int, measured_capacity_rps: float) -> tuple[StepModel, dict[str, float]]:
    """`model` rescaled so the measured probe's requests at its concurrency give its measured capacity."""
    simulated = closed_loop_capacity_rps(model, engine, probe_lengths, concurrency)
    factor = simulated / measured_capacity_rps
    return scaled_model(model, factor), {"profile_capacity_rps": simulated, "measured_capacity_rps": measured_capacity_rps,
                                         "step_time_factor": factor}


def ramp_request(outcome: RequestOutcome, index: int) -> RampRequest:
    """A simulated request as the ramp's analysis reads one (unfinished and aborted ones are lost)."""
    request = outcome.request
    if outcome.status == 200:
        ttft = outcome.first_token_s - request.arrival_s
        tpot = tpot_s(outcome.finish_s - request.arrival_s, ttft, request.output_len)
        return RampRequest(index, request.class_name, request.arrival_s, outcome.finish_s, "served", ttft, tpot,
                           request.output_len, 200)
    kind = "refused" if outcome.status in (429, 503) else "lost"
    return RampRequest(index, request.class_name, request.arrival_s, outcome.finish_s or request.arrival_s, kind,
                       status=outcome.status, detail=outcome.code)


def simulate_ramp(config: AppConfig, model: StepModel, engine: EngineConfig, requests: Sequence[SimRequest],
                  startup_delay_s: float, seed: int = 0) -> SimulatedRamp:
    """The ramp on a simulated cluster starting with min_replicas running, its timeline sampled every second."""
    look_back = config.autoscaling.look_back_period_s
    cluster_config = ClusterConfig(config.policy_classes(), engine=engine, initial_replicas=config.autoscaling.min_replicas,
                                   startup_delay_s=startup_delay_s, control_period_s=1.0, look_back_s=look_back,
                                   drain_timeout_s=config.autoscaling.drain_timeout_s, timeline_period_s=1.0, seed=seed)
    end = max((r.arrival_s for r in requests), default=0.0)
    result = Cluster(cluster_config, model, autoscaler_for(config)).run(iter(requests), until_s=end + DRAIN_AFTER_S)
    rows = [ramp_request(o, i) for i, o in enumerate(result.outcomes)]
    samples = [(r["t_s"], r["running"], r["running"] + r["starting"] + r["draining"]) for r in result.timeline]
    queue = [(r["t_s"], r["queued"]) for r in result.timeline]
    totals = {"replica_seconds": result.gpu_seconds, "duration_s": result.duration_s, "preemptions": result.preemptions,
              "steps": result.steps}
    return SimulatedRamp(rows, samples, queue, totals)
