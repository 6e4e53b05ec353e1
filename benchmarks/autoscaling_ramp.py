"""Ray Serve's default autoscaling policy vs ours (`llm`) under the same ramp of load.

For each policy: deploy the app with autoscaling on (min..max replicas), drive closed-loop load
low -> high -> low for fixed durations (`autoscaling.ramp`), record RUNNING replicas over time,
every request's latency and outcome (served in full / refused 429-503 / lost). Writes JSON and a
PNG (replicas over time, latency over time) per run.

  python benchmarks/autoscaling_ramp.py --out benchmarks/results/autoscaling_ramp_cpu   # CPU, tiny model
  python benchmarks/autoscaling_ramp.py --config gpu.yaml --high 64 --out ...           # a GPU config
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from autoscaling.bench.ramp_settings import POLICIES, config_for
from autoscaling.ramp import Phase, RampResult, run_ramp
from serve_app.config import load_config
from serve_app.statistics import mean, percentile


def summarize(result: RampResult) -> dict:
    """Counts, latency per phase, replica-seconds and when the count changed."""
    phases = {}
    for name, start, end in result.phases:
        served = [o.latency_s for o in result.outcomes if o.phase == name and o.result == "served"]
        phases[name] = {"start_s": start, "end_s": end, "served": len(served),
                        "refused": sum(1 for o in result.outcomes if o.phase == name and o.result == "refused"),
                        "lost": sum(1 for o in result.outcomes if o.phase == name and o.result == "lost"),
                        "latency_p50_s": percentile(served, 50), "latency_p99_s": percentile(served, 99),
                        "latency_mean_s": mean(served)}
    samples = result.replicas
    replica_s = sum((b[0] - a[0]) * a[1] for a, b in zip(samples, samples[1:]))
    changes = [s for i, s in enumerate(samples) if i == 0 or s[1:] != samples[i - 1][1:]]
    return {"served": result.count("served"), "refused": result.count("refused"), "lost": result.count("lost"),
            "running_replica_seconds": round(replica_s, 1), "replica_changes": changes, "phases": phases}


def plot(runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for index, (policy, run) in enumerate(runs.items()):
        t = [s[0] for s in run["result"]["replicas"]]
        top.step(t, [s[1] for s in run["result"]["replicas"]], where="post", label=f"{policy} (running)",
                 color=f"C{index}")
        served = [o for o in run["result"]["outcomes"] if o["result"] == "served"]
        bottom.scatter([o["sent_s"] for o in served], [o["latency_s"] for o in served], s=4, alpha=0.5,
                       color=f"C{index}", label=policy)
    for name, start, end in next(iter(runs.values()))["result"]["phases"]:
        top.axvspan(start, end, alpha=0.08, color="grey" if "high" not in name else "red")
    top.set_ylabel("RUNNING replicas")
    top.legend()
    bottom.set_ylabel("request latency (s)")
    bottom.set_xlabel("seconds since the ramp began")
    bottom.set_yscale("log")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="app config (default: the embedded tiny CPU model)")
    parser.add_argument("--out", default="benchmarks/results/autoscaling_ramp_cpu")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--low", type=int, default=1, help="concurrent clients in the low phases")
    parser.add_argument("--high", type=int, default=12, help="concurrent clients in the high phase")
    parser.add_argument("--low-s", type=float, default=20)
    parser.add_argument("--high-s", type=float, default=150)
    parser.add_argument("--low-again-s", type=float, default=150)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=2)
    parser.add_argument("--target-ongoing-requests", type=float, default=2)
    parser.add_argument("--upscale-delay-s", type=float, default=3)
    parser.add_argument("--downscale-delay-s", type=float, default=20)
    parser.add_argument("--look-back-period-s", type=float, default=15, help="above Serve's 10 s metrics push")
    parser.add_argument("--metrics-push-s", type=float, default=1, help="replicas' autoscaling metrics push period")
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    from serve_app.local import delete_side_app, deploy_side_app

    base = load_config(args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=max(os.cpu_count() or 1, 4), include_dashboard=False)
    serve.start(http_options={"host": base.http.host, "port": base.http.port})
    phases = [Phase("low", args.low, args.low_s, args.low_s), Phase("high", args.high, args.high_s, args.high_s),
              Phase("low-again", args.low, args.low_again_s, args.low_again_s)]
    runs: dict[str, dict] = {}
    for policy in args.policies:
        name = f"ramp_{policy}"
        started = time.monotonic()
        url = deploy_side_app(config_for(base, policy, args), name)
        print(f"{policy}: app up in {time.monotonic() - started:.0f}s at {url}", flush=True)
        result = asyncio.run(run_ramp(url, base.model.served_name, phases, name, max_tokens=args.max_tokens))
        delete_side_app(name)
        runs[policy] = {"summary": summarize(result), "result": result.to_json()}
        print(f"{policy}: {json.dumps(runs[policy]['summary'])}", flush=True)
    report = {"command": " ".join([sys.executable, *sys.argv]), "args": vars(args),
              "policies": {p: r["summary"] for p, r in runs.items()}}
    (out / "autoscaling_ramp.json").write_text(json.dumps(report, indent=2))
    (out / "autoscaling_ramp_raw.json").write_text(json.dumps({p: r["result"] for p, r in runs.items()}))
    plot(runs, out / "autoscaling_ramp.png")
    print(f"wrote {out}/autoscaling_ramp.json, autoscaling_ramp_raw.json, autoscaling_ramp.png")
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
