"""How much one server's figures move between two sessions of `request_path_h200.py` on the same GPU kind
(same script, seeds, engine limits; another machine, another day): per load point, TTFT p50 / p99 and
TPOT p99 of session B against session A, and the saturated output tok/s.

Issue 16's latency goals compare ours with `vllm serve` within +10 ms at the TTFT median; this says how
much of a cross-session comparison is the sessions themselves. It also writes the goals of ours measured
in a third session (`--ours-from`) against B's `vllm serve`, flagged as cross-session in summary.json.

    python benchmarks/session_variation.py --a DIR_A --b DIR_B [--server vllm] [--ours-from DIR] --out DIR
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autoscaling.bench.vs_vllm_goals import latency_goals, throughput_goal

FIGURES = ("median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms")


def load_points(result_dir: Path) -> tuple[dict, dict]:
    """(saturated, points) of a result folder: latency.json's, plus bursty.json's points where it has them."""
    latency = json.loads((result_dir / "latency.json").read_text())
    points = dict(latency["points"])
    bursty_path = result_dir / "bursty.json"
    if bursty_path.exists():
        points.update(json.loads(bursty_path.read_text()).get("points", {}))
    return latency["saturated"], points


def point_variation(a: dict | None, b: dict | None) -> dict | None:
    """B against A for one bench result: each figure's difference (ms) and ratio; None unless both completed."""
    if not a or not b or not a.get("completed") or not b.get("completed"):
        return None
    return {figure: {"a": round(a[figure], 2), "b": round(b[figure], 2), "b_minus_a": round(b[figure] - a[figure], 2),
                     "b_over_a": round(b[figure] / a[figure], 3)}
            for figure in FIGURES if a.get(figure) and b.get(figure)}


def variation(a_dir: Path, b_dir: Path, server: str) -> dict:
    a_saturated, a_points = load_points(a_dir)
    b_saturated, b_points = load_points(b_dir)
    points = {name: point_variation(a_points[name].get(server), b_points[name].get(server))
              for name in a_points if name in b_points}
    a_tok_s = (a_saturated.get(server) or {}).get("output_throughput")
    b_tok_s = (b_saturated.get(server) or {}).get("output_throughput")
    saturated = None if not a_tok_s or not b_tok_s else {"a": round(a_tok_s, 1), "b": round(b_tok_s, 1),
                                                          "b_over_a": round(b_tok_s / a_tok_s, 4)}
    ttft_p50_moves = [p["median_ttft_ms"]["b_minus_a"] for p in points.values() if p and "median_ttft_ms" in p]
    ttft_p99_moves = [p["p99_ttft_ms"]["b_over_a"] for p in points.values() if p and "p99_ttft_ms" in p]
    return {"server": server, "a": str(a_dir), "b": str(b_dir), "points": points, "saturated_output_tok_s": saturated,
            "ttft_p50_b_minus_a_ms_range": [min(ttft_p50_moves), max(ttft_p50_moves)] if ttft_p50_moves else None,
            "ttft_p99_b_over_a_range": [min(ttft_p99_moves), max(ttft_p99_moves)] if ttft_p99_moves else None}


def cross_session_goals(ours_dir: Path, vllm_dir: Path) -> list[dict]:
    """Issue 16's latency goals, ours from one session against `vllm serve` from another (points both have)."""
    ours_saturated, ours_points = load_points(ours_dir)
    vllm_saturated, vllm_points = load_points(vllm_dir)
    goals = [g for name, point in vllm_points.items() if name in ours_points and ours_points[name].get("ours")
             for g in latency_goals(name, ours_points[name]["ours"], point.get("vllm"))]
    if ours_saturated.get("ours") and vllm_saturated.get("vllm"):
        goals.append(throughput_goal(" (mixed lengths)", ours_saturated["ours"], vllm_saturated["vllm"]))
    return goals


def measured_by(result_dir: Path) -> list[str]:
    """The commands that made a result folder's figures: its parts' `scripts` and its servers' commands."""
    commands = []
    for part in ("latency.json", "bursty.json"):
        path = result_dir / part
        if path.exists():
            data = json.loads(path.read_text())
            commands += data.get("scripts") or ([data["script"]] if "script" in data else [])
    servers = result_dir / "servers.json"
    if servers.exists():
        commands += [server["command"] for server in json.loads(servers.read_text()).values()]
    return commands


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="the earlier session's result folder")
    parser.add_argument("--b", type=Path, required=True, help="the later session's result folder")
    parser.add_argument("--server", default="vllm", choices=["vllm", "ours"])
    parser.add_argument("--ours-from", type=Path, help="a session whose ours to hold against B's vllm serve")
    parser.add_argument("--gpu", default="NVIDIA H200")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    found = variation(args.a, args.b, args.server)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "variation.json").write_text(json.dumps(found, indent=2))
    for name, point in found["points"].items():
        if point:
            print(f"{name:12s} " + "  ".join(f"{figure} {v['a']:.1f} -> {v['b']:.1f} ({v['b_minus_a']:+.1f})"
                                             for figure, v in point.items()))
    print(f"saturated output tok/s: {found['saturated_output_tok_s']}")
    if args.ours_from:
        goals = cross_session_goals(args.ours_from, args.b)
        summary = {"gpu": args.gpu, "commands": [*measured_by(args.b), " ".join([Path(sys.argv[0]).as_posix(),
                                                                                  *sys.argv[1:]])],
                   "same_session": False, "ours_from": str(args.ours_from), "vllm_from": str(args.b),
                   "session_variation_of_vllm": {key: found[key] for key in ("ttft_p50_b_minus_a_ms_range",
                                                                             "ttft_p99_b_over_a_range",
                                                                             "saturated_output_tok_s")},
                   "goals": goals}
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(goals, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
