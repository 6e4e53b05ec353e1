"""Ray Serve's default autoscaling policy vs our LLM policy on a simulated cluster (no GPU).

Same ramp for both (100 -> 3000 -> 100 req/s by default) through the calibrated simulator
(`autoscaling/simulator/`, H100 llama2-7b AWQ profile) behind our real router policy, with the
workload and SLO of the H100 capacity sweep (`benchmarks/results/capacity_h100/sweep.json`:
interactive/batch 0.2/0.8, 256 prompt + 256 output tokens) and, for BOTH policies, the values
`llmserve autoscale --sweep benchmarks/results/capacity_h100/sweep.json --slo-class interactive
--ttft-slo 0.5 --tpot-slo 0.1` derives from it (target_ongoing_requests 72.66, upscale delay 10 s,
downscale delay 360 s, 29.7 req/s per replica). Prints a table; writes JSON + PNG to
benchmarks/results/simulated_autoscaling/.

    python benchmarks/simulate_autoscaling.py
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the default --out and the profile's path are relative to it

from autoscaling.loadtest.lengths import Fixed
from autoscaling.simulator.autoscalers import LLMPolicyAutoscaler, RayDefaultAutoscaler, RayDefaultSettings
from autoscaling.simulator.cluster import Cluster, ClusterConfig
from autoscaling.simulator.fit import PROFILE
from autoscaling.simulator.report import all_stats, series
from autoscaling.simulator.step_model import StepModel
from autoscaling.simulator.workload import ClassLoad, PiecewiseLinearArrivals, generate
from serve_app.policy.priority_classes import PriorityClass, PriorityClasses
from serve_app.policy.router_core import RouterPolicy

CLASSES = PriorityClasses([PriorityClass("interactive", 0, ttft_slo_s=0.5, tpot_slo_s=0.1, queue_deadline_s=5.0),
                           PriorityClass("batch", 1, ttft_slo_s=30.0, tpot_slo_s=0.2, queue_deadline_s=60.0)])
WORKLOAD = {"interactive": ClassLoad(0.2, Fixed(256), Fixed(256)), "batch": ClassLoad(0.8, Fixed(256), Fixed(256))}


def autoscalers(args) -> dict:
    common = dict(min_replicas=args.initial_replicas, max_replicas=args.max_replicas,
                  target_ongoing_requests=args.target_ongoing_requests, upscale_delay_s=args.upscale_delay_s,
                  downscale_delay_s=args.downscale_delay_s)
    return {"ray_default": lambda: RayDefaultAutoscaler(RayDefaultSettings(upscaling_factor=1.0,
                                                                             downscaling_factor=0.5, **common)),
            "llm_policy": lambda: LLMPolicyAutoscaler(top_classes=("interactive",), **common),
            # The same with the capacity model's requests/s per replica: sized from the arrival rate.
            "llm_policy_rps": lambda: LLMPolicyAutoscaler(top_classes=("interactive",),
                                                          target_rps_per_replica=args.target_rps_per_replica, **common)}


def scale_up_times(timeline: list[dict], ramp_start_s: float, needed: int) -> dict:
    """Seconds from the ramp's start to the first larger target, and until `needed` replicas ran."""
    first_target = next((r["t_s"] for r in timeline if r["t_s"] >= ramp_start_s and r["target"] > timeline[0]["target"]),
                        None)
    reached = next((r["t_s"] for r in timeline if r["t_s"] >= ramp_start_s and r["running"] >= needed), None)
    return {"needed_replicas": needed,
            "first_scale_up_s": None if first_target is None else first_target - ramp_start_s,
            "reached_needed_s": None if reached is None else reached - ramp_start_s}


def run_one(name: str, make, args, model: StepModel) -> dict:
    t = args.phase_s
    arrival = PiecewiseLinearArrivals(((0, args.low_rps), (t, args.low_rps), (2 * t, args.peak_rps),
                                       (2 * t + args.peak_s, args.peak_rps), (3 * t + args.peak_s, args.low_rps),
                                       (3 * t + args.peak_s + args.tail_s, args.low_rps)))
    end_s = arrival.natural_duration_s()
    config = ClusterConfig(CLASSES, initial_replicas=args.initial_replicas, startup_delay_s=args.startup_delay_s,
                           control_period_s=1.0, look_back_s=30.0, seed=args.seed, router=RouterPolicy(**args.router))
    started = time.perf_counter()
    result = Cluster(config, model, make()).run(generate(arrival, WORKLOAD, seed=args.seed), until_s=end_s + 600)
    wall_s = time.perf_counter() - started
    stats = all_stats(result.outcomes, result.duration_s, CLASSES)
    needed = math.ceil(args.peak_rps / args.capacity_rps)
    return {"policy": name, "wall_s": wall_s, "requests": len(result.outcomes), "engine_steps": result.steps,
            "replica_seconds": result.gpu_seconds, "duration_s": result.duration_s, "preemptions": result.preemptions,
            "max_replicas_running": max(r["running"] for r in result.timeline),
            "scale_up": scale_up_times(result.timeline, t, needed),
            "stats": stats, "timeline": result.timeline,
            "series": series(result.outcomes, CLASSES, 10.0, result.duration_s), "arrival": arrival.to_dict()}


def _run_named(name: str, args) -> dict:
    return run_one(name, autoscalers(args)[name], args, StepModel.load(PROFILE))


def plot(runs: list[dict], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
    for run in runs:
        axes[0].plot([r["t_s"] for r in run["timeline"]], [r["running"] for r in run["timeline"]], label=run["policy"])
        s = run["series"]
        for name in CLASSES.names:
            ttft = [v if v is not None else float("nan") for v in s["ttft_p99_s"][name]]
            axes[1].plot(s["t_s"], ttft, label=f"{run['policy']} {name}")
            axes[2].plot(s["t_s"], s["goodput_rps"][name], label=f"{run['policy']} {name}")
    axes[0].set_ylabel("running replicas")
    axes[1].set_ylabel("p99 TTFT (s), by arrival")
    axes[1].set_yscale("log")
    axes[2].set_ylabel("goodput (req/s)")
    axes[2].set_xlabel("simulated time (s)")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f}s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--low-rps", type=float, default=100.0)
    parser.add_argument("--peak-rps", type=float, default=3000.0)
    parser.add_argument("--phase-s", type=float, default=300.0, help="length of the first low phase and of each ramp")
    parser.add_argument("--peak-s", type=float, default=600.0, help="length of the peak")
    parser.add_argument("--tail-s", type=float, default=600.0, help="length of the low phase after the ramp down")
    parser.add_argument("--initial-replicas", type=int, default=5, help="also min_replicas")
    parser.add_argument("--max-replicas", type=int, default=200)
    parser.add_argument("--target-ongoing-requests", type=float, default=72.66, help="from `llmserve autoscale`")
    parser.add_argument("--capacity-rps", type=float, default=29.7, help="per replica, from `llmserve autoscale`")
    parser.add_argument("--target-rps-per-replica", type=float, default=23.73,
                        help="llm_policy_rps: capacity x (1 - headroom), from `llmserve autoscale`")
    parser.add_argument("--add-to", action="store_true",
                        help="add these policies' runs to the JSON already in --out (replacing same-named ones)")
    parser.add_argument("--upscale-delay-s", type=float, default=10.0)
    parser.add_argument("--downscale-delay-s", type=float, default=360.0)
    parser.add_argument("--startup-delay-s", type=float, default=120.0)
    parser.add_argument("--policies", default="ray_default,llm_policy")
    parser.add_argument("--jobs", type=int, default=1, help="simulate the policies in this many processes")
    parser.add_argument("--plot-only", action="store_true", help="re-plot the JSON in --out (no simulation)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--router", type=json.loads, default={},
                        help='JSON: the router\'s settings (the config\'s `router:`), e.g. {"newest_first_after": null}')
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/simulated_autoscaling")
    args = parser.parse_args(argv)
    if args.plot_only:
        plot(json.loads((args.out / "simulated_autoscaling.json").read_text())["runs"],
             args.out / "simulated_autoscaling.png")
        return 0
    names = args.policies.split(",")
    if args.jobs > 1:
        with multiprocessing.Pool(min(args.jobs, len(names))) as pool:
            runs = pool.starmap(_run_named, [(name, args) for name in names])
    else:
        runs = [_run_named(name, args) for name in names]
    print(f"{'policy':<12} {'class':<12} {'sent':>8} {'served':>8} {'met SLO':>8} {'429':>7} {'503':>7} "
          f"{'TTFT p50':>9} {'TTFT p99':>9} {'repl-h':>7} {'max repl':>8} {'to 1st up':>9} {'to needed':>9} "
          f"{'wall s':>7}")
    for run in runs:
        up = run["scale_up"]
        for name, c in run["stats"]["classes"].items():
            good = round(c["goodput_rps"] * run["duration_s"])
            print(f"{run['policy']:<12} {name:<12} {c['sent']:>8} {c['completed']:>8} {good:>8} {c['refused_429']:>7} "
                  f"{c['refused_503']:>7} {c['ttft_s']['p50'] or 0:>9.3f} {c['ttft_s']['p99'] or 0:>9.3f} "
                  f"{run['replica_seconds'] / 3600:>7.1f} {run['max_replicas_running']:>8} "
                  f"{_s(up['first_scale_up_s']):>9} {_s(up['reached_needed_s']):>9} {run['wall_s']:>7.1f}")
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(map(shlex.quote, sys.argv))
    for run in runs:
        run["command"] = command
    if args.add_to:
        earlier = json.loads((args.out / "simulated_autoscaling.json").read_text())
        kept = [{"command": earlier["command"], **r} for r in earlier["runs"] if r["policy"] not in names]
        runs = kept + runs
    result = {"benchmark": "simulate_autoscaling", "command": command, "run_commands": "each run's `command`",
              "profile": str(PROFILE.relative_to(REPO)), "args": {k: str(v) for k, v in vars(args).items()},
              "classes": [c.__dict__ for c in CLASSES], "runs": runs}
    (args.out / "simulated_autoscaling.json").write_text(json.dumps(result, indent=1))
    try:
        plot(runs, args.out / "simulated_autoscaling.png")
    except ImportError:  # e.g. a bare machine without matplotlib: re-plot later with --plot-only
        print("matplotlib not installed: no PNG")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
