"""Is the tail of ours-minus-`vllm serve`'s TTFT (request by request, same prompts at the same offsets) a cost of
our path, or how much one run of the engine differs from another? Three views of one recorded H200 run:

  measured   ours minus `vllm serve` in RESULTS (`request_path_h200.py`'s per-request files)
  vllm/vllm  `vllm serve` in RESULTS minus `vllm serve` in BASELINE (another session, the same seeds: the same
             prompts; the load points' rates differ by the runs' capacities, ~0.04%, a few ms of drift)
  simulated  the simulated engine (`autoscaling.simulator.step_alignment`, the H100 Llama-2-7B AWQ step model)
             replaying RESULTS' arrivals with every request delayed by a fixed part plus a jitter drawn
             uniformly from [0, J] ms: a fixed delay alone costs each request just itself; jitter moves requests
             across step boundaries

    python benchmarks/step_alignment.py [--results DIR] [--baseline DIR] [--out DIR]

Prints the p10 / p50 / p90 / p99 of each, writes step_alignment.json (with this command) and
step_alignment.png (their distributions per load point) into OUT. No GPU: the files are read, the engine simulated.
"""
from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
from pathlib import Path

import numpy as np

from autoscaling.bench.result_summaries import paired_ttft_differences_s
from autoscaling.bench.vllm_bench import saved_bench
from autoscaling.simulator.replica import EngineConfig
from autoscaling.simulator.step_alignment import delayed_ttft_differences, difference_percentiles_ms
from autoscaling.simulator.step_model import StepModel

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks/results/latency_h200"
PROFILE = ROOT / "autoscaling/simulator/profiles/h100_llama2_7b_awq.json"
POINTS = ("poisson_25", "poisson_50", "poisson_75", "bursty_25", "bursty_50", "bursty_75")
FIXED_DELAY_S = 0.003  # about what our path adds before the engine at the median (the ingress's stamps)
JITTERS_MS = (0.0, 1.0, 2.0, 4.0)


def paired_s(later: dict, earlier: dict) -> list[float]:
    """`later`'s TTFT minus `earlier`'s, request by request (the same seed: the same prompts in the same order)."""
    differences = paired_ttft_differences_s(later, earlier)
    if differences is None:
        raise SystemExit("the two runs' prompts differ (not the same seed) or carry no per-request detail")
    return differences


def simulated_s(model: StepModel, run: dict, jitter_ms: float, seed: int) -> list[float]:
    starts = np.array(run["start_times"]) - run["start_times"][0]
    arrivals = [(float(t), int(p), int(o)) for t, p, o in zip(starts, run["input_lens"], run["output_lens"])]
    draw = random.Random(seed)
    delays = [FIXED_DELAY_S + draw.uniform(0.0, jitter_ms / 1000) for _ in arrivals]
    return delayed_ttft_differences(model, EngineConfig(), arrivals, delays)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS / "one_gpu_direct_two_machines")
    parser.add_argument("--baseline", type=Path, default=RESULTS / "one_gpu_same_session_run2")
    parser.add_argument("--profile", type=Path, default=PROFILE)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/step_alignment")
    args = parser.parse_args()
    model = StepModel.load(args.profile)
    report: dict = {"command": shlex.join(["python", *sys.argv]), "results": str(args.results),
                    "baseline": str(args.baseline), "profile": str(args.profile),
                    "fixed_delay_ms": FIXED_DELAY_S * 1000, "points": {}}
    distributions: dict[str, dict[str, list[float]]] = {}
    for name in POINTS:
        ours, vllm, vllm_before = (saved_bench(args.results, f"ours_{name}"), saved_bench(args.results, f"vllm_{name}"),
                                   saved_bench(args.baseline, f"vllm_{name}"))
        if not (ours and vllm):
            continue
        views = {"measured (ours - vllm serve)": paired_s(ours, vllm)}
        if vllm_before:
            views["vllm serve - vllm serve (another session)"] = paired_s(vllm, vllm_before)
        for jitter in JITTERS_MS:
            views[f"simulated, {FIXED_DELAY_S * 1000:g} ms + jitter 0-{jitter:g} ms"] = simulated_s(model, vllm, jitter,
                                                                                                   seed=len(name))
        distributions[name] = views
        report["points"][name] = {view: difference_percentiles_ms(values) for view, values in views.items()}
        print(name)
        for view, stats in report["points"][name].items():
            print(f"  {view:48s} " + "  ".join(f"{key} {value:+7.1f}" for key, value in stats.items()))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_alignment.json").write_text(json.dumps(report, indent=2))
    plot(distributions, args.out / "step_alignment.png")
    print(f"wrote {args.out / 'step_alignment.json'} and step_alignment.png")
    return 0


def plot(distributions: dict[str, dict[str, list[float]]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(15, 8), sharex=True, sharey=True)
    for axis, (name, views) in zip(axes.flat, distributions.items()):
        for view, values in views.items():
            ms = np.sort(np.array(values) * 1000)
            style = "-" if view.startswith(("measured", "vllm")) else ":"
            axis.plot(ms, np.arange(1, len(ms) + 1) / len(ms), style, label=view)
        axis.set_title(name)
        axis.set_xlim(-40, 50)
        axis.grid(alpha=0.3)
    for axis in axes[-1]:
        axis.set_xlabel("TTFT difference, request by request (ms)")
    for axis in axes[:, 0]:
        axis.set_ylabel("share of requests")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    figure.suptitle("Ours minus vllm serve, against vllm serve minus itself and a simulated delay before the engine")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
