"""Fair shares between callers of one priority class (issue 17), on the pure router core: no GPU, no Ray.

One replica (a fixed service time per request, `--window` at once), a heavy and a light caller of one class
offering together `--overload` x its capacity at `--heavy-to-light` : 1. Prints, for the light caller,
requests served alone, with the heavy caller under fair shares, and with both under one key (a single FIFO
per class, as before fair shares); the goal is served-with-heavy >= 0.9 x served-alone.

    python benchmarks/tenant_fairness_sim.py [--seconds 120] [--seed 0] [--out DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from serve_app.bench.tenant_fairness import Workload, light_share

GOAL = 0.9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=Workload.seconds)
    parser.add_argument("--service-s", type=float, default=Workload.service_s)
    parser.add_argument("--window", type=int, default=Workload.window)
    parser.add_argument("--overload", type=float, default=Workload.overload)
    parser.add_argument("--heavy-to-light", type=float, default=Workload.heavy_to_light)
    parser.add_argument("--heavy-weight", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=Workload.seed)
    parser.add_argument("--out", type=Path, help="also write tenant_fairness_sim.json here")
    args = parser.parse_args(argv)
    workload = Workload(service_s=args.service_s, window=args.window, overload=args.overload,
                        heavy_to_light=args.heavy_to_light, seconds=args.seconds, seed=args.seed)
    result = light_share(workload, heavy_weight=args.heavy_weight)
    heavy_rps, light_rps = workload.rates_rps()
    print(f"capacity {workload.capacity_rps:g} req/s; offered: heavy {heavy_rps:.2f} req/s, light {light_rps:.2f} "
          f"req/s, {workload.seconds:g} s")
    print(f"{'run':<28}{'caller':<8}{'offered':>8}{'served':>8}{'429':>6}{'503':>6}")
    rows = [("light alone", "light", result["alone"])]
    rows += [(run, name, outcome) for run in ("fair", "one_fifo") for name, outcome in result[run].items()]
    for run, name, o in rows:
        print(f"{run:<28}{name:<8}{o.offered:>8}{o.served:>8}{o.refused:>6}{o.expired:>6}")
    ratio = result["light_served_vs_alone"]
    print(f"light served with heavy / alone: {ratio:.2f} with fair shares (goal >= {GOAL}), "
          f"{result['light_served_vs_alone_one_fifo']:.2f} under one key")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        record = {"command": " ".join(["python", *sys.argv]), "workload": dataclasses.asdict(workload),
                  "goal": GOAL, **{k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else
                                       {n: dataclasses.asdict(o) for n, o in v.items()} if isinstance(v, dict) else v)
                                    for k, v in result.items()}}
        (args.out / "tenant_fairness_sim.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
