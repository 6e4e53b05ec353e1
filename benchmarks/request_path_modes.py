"""Our request path by front and delivery, with an instant stand-in engine: `routing_capacity.py` runs, one per
mode, compared in a summary and a plot.

Modes (`http.front` / `http.delivery`): proxy / push (Ray Serve's Python HTTP proxy, replicas call the ingress
replica holding the request: the default), proxy / pull, haproxy / pull (Ray Serve's HAProxy mode, which
needs delivery by pull or direct) and haproxy / direct (each request and its parts over a TCP connection
between the ingress and LLM replica, `serve_app.direct_link`). Run each mode in its own process (HAProxy mode is chosen when Ray starts):

    python benchmarks/routing_capacity.py --out DIR/proxy_push --front proxy --delivery push \\
        --requests 200 --ingress 1 --concurrency 256 --seconds 10 --background-streams 64 \\
        --background-tokens 256 --token-interval-s 0.02
    (the same with --out DIR/haproxy_pull --front haproxy --delivery pull, and DIR/proxy_pull ...)
    python benchmarks/request_path_modes.py --out DIR

With an engine that answers at once, a client's time to its first event is our whole path (HTTP front,
ingress, routing, the Ray hops, delivery): an upper bound of what we add to an engine's TTFT, which issue 16
wants within 10 ms of `vllm serve`'s. Writes DIR/summary.json and DIR/request_path_modes.png.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

MODES = ("proxy_push", "proxy_pull", "haproxy_pull", "haproxy_direct")
OVERHEAD_GOAL_MS = 10.0  # issue 16: TTFT p50 within +10 ms of vllm serve's


def load_runs(out: Path) -> dict[str, dict]:
    return {mode: json.loads((out / mode / "routing_capacity.json").read_text())
            for mode in MODES if (out / mode / "routing_capacity.json").exists()}


def first_event(run: dict, loaded: bool) -> dict[str, float]:
    overhead = run["under_streams"]["overhead"] if loaded else run["overhead"]
    return overhead["client_first_event"]


def summary(runs: dict[str, dict]) -> dict:
    goals = []
    for mode, run in runs.items():
        idle = first_event(run, loaded=False)["p50_ms"]
        goals.append({"name": f"{mode}: first event p50 with an instant engine, one request at a time (ms)",
                      "measured": idle, "goal": f"<= {OVERHEAD_GOAL_MS}", "met": idle <= OVERHEAD_GOAL_MS})
        if run.get("under_streams"):
            loaded = first_event(run, loaded=True)["p50_ms"]
            streams = run["under_streams"]["overhead"]["background"]
            goals.append({"name": f"{mode}: first event p50 under {streams['streams']} token streams "
                                  f"({streams['events_per_s']} events/s) (ms)",
                          "measured": loaded, "goal": f"<= {OVERHEAD_GOAL_MS}", "met": loaded <= OVERHEAD_GOAL_MS})
        for capacity in run.get("capacity", []):
            goals.append({"name": f"{mode}: routing capacity, {capacity['ingress_replicas']} ingress replica(s), "
                                  f"{capacity['concurrency']} closed-loop clients (requests/s)",
                          "measured": capacity["requests_per_s"], "goal": "measured", "met": True})
    machine = {run["machine"] for run in runs.values()}
    return {"gpu": "none (a stand-in engine)", "machine": ", ".join(sorted(machine)),
            "commands": [run["command"] for run in runs.values()] + ["python benchmarks/request_path_modes.py"],
            "goals": goals,
            "first_event_ms": {mode: {"one_at_a_time": first_event(run, False),
                                      "under_streams": first_event(run, True) if run.get("under_streams") else None}
                               for mode, run in runs.items()}}


def plot(runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, loaded, title in ((axes[0], False, "one request at a time"), (axes[1], True, "under token streams")):
        modes = [mode for mode, run in runs.items() if not loaded or run.get("under_streams")]
        for offset, quantile in enumerate(("p50_ms", "p90_ms", "p99_ms")):
            values = [first_event(runs[mode], loaded)[quantile] for mode in modes]
            ax.bar([i + (offset - 1) * 0.27 for i in range(len(modes))], values, width=0.27, label=quantile[:3])
        ax.set_xticks(range(len(modes)), [mode.replace("_", " / ") for mode in modes])
        ax.axhline(OVERHEAD_GOAL_MS, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"client's first event, {title}")
        ax.set_ylabel("ms")
        ax.legend()
    fig.suptitle("our request path with an instant engine: front / delivery")
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder holding one routing_capacity run per mode")
    args = parser.parse_args()
    runs = load_runs(args.out)
    if not runs:
        raise SystemExit(f"no runs under {args.out} (expected {', '.join(MODES)} folders)")
    result = summary(runs)
    (args.out / "summary.json").write_text(json.dumps(result, indent=2))
    for goal in result["goals"]:
        print(f"{'met ' if goal['met'] else 'MISS'} {goal['name']}: {goal['measured']} (goal {goal['goal']})")
    try:
        plot(runs, args.out / "request_path_modes.png")
    except ImportError:  # no matplotlib on the GPU host's bundle: the summary is the result
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
