"""Our router's adaptive window against the engine alone under overload, on the calibrated simulator (no GPU).

One replica (`autoscaling/simulator/`, H100 llama2-7b AWQ step profile; max_num_seqs 1,024, 8,192 tokens per
step, the KV cache of a synthetic Llama-3-8B AWQ on an H200 at an 8,192 context) and the mixed preset's
workload and SLO. Per offered rate, three scenarios: a fresh app (30 s of Poisson arrivals), the same arrivals
80 s after a burst of 1,024 requests (what the closed-loop capacity run does to the window before the
open-loop run of `controller_h200.py`'s fp8-kv part), and a fresh app under 120 s of arrivals (a sustained
overload: a request lives ~25 s, so 30 s show mostly the ramp to it), the last also with the router's
admission control on and the default class's 10 s queue deadline (the JSON and the table split the unserved
into refused at once and refused after waiting). Each request is sent once straight into
the engine (vLLM alone), once through our `RouterCore`, and once through it as it was before adaptive LIFO
and the TPOT set-point (oldest first, TPOT average held at the target); the requests of the open-loop window
are judged by the preset's SLO, split by which target they missed. Prints a table; writes JSON (and summary.json: the goals) + PNG to
benchmarks/results/simulated_window_overload/.

    python benchmarks/window_overload_sim.py
    python benchmarks/window_overload_sim.py --window-tuning '{"tpot_setpoint": 1.0}' --out DIR  # newest first alone
    python benchmarks/window_overload_sim.py --router '{"newest_first_after": null}' --out DIR  # the set-point alone
    python benchmarks/window_overload_sim.py --profile autoscaling/simulator/profiles/h200_llama3_8b_awq.json \
        --rates 24,27,30.1,33.7,36 --timeline-rate 30.1 --out benchmarks/results/simulated_window_overload_h200
                                                   # the step model refitted to the H200 (fit_gpu_profile.py)
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the default --out and the profile's path are relative to it

from autoscaling.bench.window_overload import (BEFORE_LIFO_AND_SETPOINT, H200_LLAMA3_8B_ENGINE, Scenario,
                                              attainment_goals, behind_our_router, engine_alone)
from autoscaling.simulator.fit import PROFILE
from autoscaling.simulator.step_model import StepModel



SCENARIOS = {  # name: (burst, judged window s, queue deadline with admission on)
    "fresh": (0, 30.0, None),
    "after_burst": (None, 30.0, None),  # None: --burst
    "sustained": (0, 120.0, None),
    "sustained_admission": (0, 120.0, 10.0),  # the default class's deadline
}
ROUTERS = {"engine_alone": "vLLM alone", "our_router": "our router",
           "our_router_before": "our router before (oldest first, TPOT at target)"}


def plot(results: list[dict], timeline: list[dict], timeline_rate: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    titles = {"fresh": "fresh app, 30 s", "after_burst": "after a burst, 30 s", "sustained": "fresh app, 120 s"}
    scenarios = list(titles)  # with admission on: in the JSON and the printed table
    for ax, scenario in zip(axes.flat, scenarios):
        rows = [r for r in results if r["scenario"] == scenario]
        for who, style in (("engine_alone", dict(color="tab:gray", linewidth=5.0, alpha=0.6)),
                           ("our_router_before", dict(color="tab:orange", linewidth=1.5, linestyle="--")),
                           ("our_router", dict(color="tab:blue", linewidth=1.5))):
            ax.plot([r["rate_rps"] for r in rows], [r[who]["met"] for r in rows], marker="o", label=ROUTERS[who],
                    **style)
        ax.set(xlabel="offered req/s (open loop)", ylabel="requests within the mixed preset's SLO",
               title=titles[scenario], ylim=(0, 1.05))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    right = axes.flat[3]
    ts = [s["t_s"] for s in timeline]
    windows = [sum(w["window"] for w in (s.get("windows") or {}).values()) for s in timeline]
    caps = [sum(w["window_cap"] for w in (s.get("windows") or {}).values()) for s in timeline]
    right.plot(ts, windows, label="window")
    right.plot(ts, caps, "--", label="window cap")
    right.plot(ts, [s["in_flight"] for s in timeline], label="in flight")
    right.plot(ts, [s["queued"] for s in timeline], ":", label="router queue")
    right.set(xlabel="t (s)", ylabel="requests", title=f"our router, sustained {timeline_rate:g} req/s")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="10,12,14,16,18,20,22", help="offered req/s, comma-separated")
    parser.add_argument("--burst", type=int, default=1024, help="requests at t = 0 in the after-a-burst scenario")
    parser.add_argument("--timeline-rate", type=float, default=18.0, help="the sustained rate whose timeline is plotted")
    parser.add_argument("--window-tuning", type=json.loads, default={}, help="JSON: knobs of our router's window")
    parser.add_argument("--router", type=json.loads, default={},
                        help='JSON: our router\'s settings (e.g. {"newest_first_after": null}: oldest first)')
    parser.add_argument("--profile", type=Path, default=PROFILE,
                        help="the step model (default: the H100 fit; autoscaling/simulator/profiles/"
                             "h200_llama3_8b_awq.json: refitted to the H200's runs by benchmarks/fit_gpu_profile.py)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/simulated_window_overload")
    args = parser.parse_args(argv)
    model = StepModel.load(args.profile)
    engine = H200_LLAMA3_8B_ENGINE
    results, timeline = [], []
    print(f"{'scenario':>19} {'req/s':>6} {'vLLM alone':>11} {'ours before':>12} {'our router':>11}  "
          f"ours missed TTFT / TPOT / both")
    for name, (burst, window_s, deadline_s) in SCENARIOS.items():
        for rate in (float(r) for r in args.rates.split(",")):
            scenario = Scenario(rate, args.burst if burst is None else burst, window_s=window_s,
                                queue_deadline_s=deadline_s)
            alone = engine_alone(scenario, model, engine)
            ours, ours_timeline = behind_our_router(scenario, model, engine, args.window_tuning, args.router)
            before, _ = behind_our_router(scenario, model, engine, args.window_tuning, BEFORE_LIFO_AND_SETPOINT)
            if name == "sustained" and rate == args.timeline_rate:
                timeline = ours_timeline
            results.append({"scenario": name, "rate_rps": rate, "burst": scenario.burst, "window_s": window_s,
                            "engine_alone": alone, "our_router": ours, "our_router_before": before})
            refused = "".join(f"; refused at once / after waiting: {who} {r['refused_at_once']:.3f} / "
                              f"{r['refused_after_waiting']:.3f}" for who, r in (("before", before), ("ours", ours))
                              if "refused_at_once" in r)
            print(f"{name:>19} {rate:>6g} {alone['met']:>11.3f} {before['met']:>12.3f} {ours['met']:>11.3f}  "
                  f"{ours['ttft_only']:.3f} / {ours['tpot_only']:.3f} / {ours['both']:.3f}{refused}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmarks/window_overload_sim.py", *(argv if argv is not None else sys.argv[1:])])
    (args.out / "window_overload.json").write_text(json.dumps(
        {"commands": [command], "profile": _shown(args.profile), "engine": vars(engine),
         "window_tuning": args.window_tuning, "router": args.router, "before": BEFORE_LIFO_AND_SETPOINT, "results": results,
         "timeline_rate_rps": args.timeline_rate, "timeline": timeline}, indent=1))
    (args.out / "summary.json").write_text(json.dumps(
        {"gpu": f"none: simulated ({_shown(args.profile)})", "commands": [command],
         "goals": attainment_goals(results)}, indent=1))
    plot(results, timeline, args.timeline_rate, args.out / "window_overload.png")
    print(f"wrote {args.out}/window_overload.json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
