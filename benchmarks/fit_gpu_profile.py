"""Refit the simulator's step model to a GPU's open-loop runs of vLLM alone (no GPU needed: it reads them).

Reads the rate probes of vLLM's defaults from `controller_h200.py`'s preset parts (default: the H200's mixed
and batch presets in benchmarks/results/controller_h200/), replays each through one simulated replica at the
same rate, preset and arrival window, and scales the shipped H100 profile's coefficients to match
(`autoscaling.simulator.gpu_fit`). Writes the profile (default
autoscaling/simulator/profiles/h200_llama3_8b_awq.json) and, under --out, fit.json (measured against
simulated per run), summary.json (the goals) and fit.png.

    python benchmarks/fit_gpu_profile.py
    python benchmarks/window_overload_sim.py --profile autoscaling/simulator/profiles/h200_llama3_8b_awq.json --out DIR
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from autoscaling.bench.controller_plans import part_window_s
from autoscaling.bench.window_overload import H200_LLAMA3_8B_ENGINE
from autoscaling.simulator import gpu_fit
from autoscaling.simulator.fit import PROFILE
from autoscaling.simulator.step_model import StepModel

DEFAULT_PARTS = ("benchmarks/results/controller_h200/preset-mixed.json",
                 "benchmarks/results/controller_h200/preset-batch.json")


def plot(result: gpu_fit.Fit, base_runs: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = (*gpu_fit.LATENCY_FIGURES, "slo_attainment")
    fig, axes = plt.subplots(1, len(figures), figsize=(4 * len(figures), 4))
    labels = [r["run"] for r in result.per_run]
    for ax, figure in zip(axes, figures):
        measured = [r["measured"][figure] for r in result.per_run]
        ax.plot(measured, [r["simulated"][figure] for r in result.per_run], "o", label="refitted")
        ax.plot(measured, [r["simulated"][figure] for r in base_runs], "x", alpha=0.6, label="H100 profile")
        lo, hi = min(measured) * 0.8, max(measured) * 1.25
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.7)
        if figure != "slo_attainment":
            ax.set(xscale="log", yscale="log")
        ax.set(title=figure, xlabel="measured", ylabel="simulated")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"vLLM alone, {len(labels)} open-loop runs: simulated against measured")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", type=Path, default=[REPO / p for p in DEFAULT_PARTS],
                        help="controller_h200.py preset part files whose rate probes are fitted")
    parser.add_argument("--model", default="synthetic llama3-8b AWQ, vLLM 0.26, NVIDIA H200",
                        help="what the runs served (the profile's meta)")
    parser.add_argument("--profile-out", type=Path,
                        default=REPO / "autoscaling/simulator/profiles/h200_llama3_8b_awq.json")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/simulated_h200_fit")
    args = parser.parse_args(argv)
    runs = []
    for path in args.parts:
        part = json.loads(path.read_text())
        runs += gpu_fit.measured_runs(part, part_window_s(part))
    base = StepModel.load(PROFILE)
    print(f"fitting to {len(runs)} runs: " + ", ".join(r.label for r in runs), flush=True)
    result = gpu_fit.fit(base, H200_LLAMA3_8B_ENGINE, runs, progress=lambda line: print(line, flush=True))
    base_runs = [{"run": r.label, "simulated": gpu_fit.simulated(base, H200_LLAMA3_8B_ENGINE, r)} for r in runs]
    print(f"{'run':>22} " + " ".join(f"{f:>22}" for f in (*gpu_fit.LATENCY_FIGURES, "slo_attainment")))
    for row in result.per_run:
        print(f"{row['run']:>22} " + " ".join(f"{row['measured'][f]:>10.3f} / {row['simulated'][f]:<9.3f}"
                                             for f in (*gpu_fit.LATENCY_FIGURES, "slo_attainment")))
    command = shlex.join(["python", "benchmarks/fit_gpu_profile.py", *(argv if argv is not None else sys.argv[1:])])
    sources = [str(p.resolve().relative_to(REPO)) if p.resolve().is_relative_to(REPO) else str(p) for p in args.parts]
    profile = json.loads(result.model.to_json())
    profile["meta"] = {"sources": sources, "model": args.model, "engine": vars(H200_LLAMA3_8B_ENGINE),
                       "fit": "the H100 profile's coefficients scaled by group (autoscaling/simulator/gpu_fit.py) to "
                              "the open-loop runs of vLLM alone", "scales": result.scales,
                       "total_misfit": result.total_misfit, "command": command}
    args.profile_out.parent.mkdir(parents=True, exist_ok=True)
    args.profile_out.write_text(json.dumps(profile, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fit.json").write_text(json.dumps(
        {"commands": [command], "base_profile": str(PROFILE.relative_to(REPO)), "engine": vars(H200_LLAMA3_8B_ENGINE),
         **result.to_dict(), "base_per_run": base_runs}, indent=1))
    (args.out / "summary.json").write_text(json.dumps(
        {"gpu": "none: simulated, fitted to the runs of " + ", ".join(sources), "commands": [command],
         "goals": gpu_fit.fit_goals(result.per_run)}, indent=1))
    plot(result, base_runs, args.out / "fit.png")
    print(f"wrote {args.profile_out}, {args.out}/fit.json and fit.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
