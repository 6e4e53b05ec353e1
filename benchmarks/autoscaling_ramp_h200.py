"""Issue 20's GPU ramp on two H200s of one host: our app autoscaling 1 -> 2 -> 1 replicas under an
open-loop ramp whose peak needs two, once with Ray Serve's default policy and once with ours (`llm`),
the same requests at the same times; then the simulator run on the same ramp and checked against both.
Pure parts: autoscaling/bench/ramp_load.py (load, config), ramp_comparison.py (figures, goals),
ramp_simulation.py (the simulated ramp).

    start --out DIR --policy P      starts our app (autoscaling min 1 max 2) in the background and
                                    waits until it is healthy (cold ~200 s, warm ~60 s)
    ramp --out DIR --policy P       a closed-loop probe of one replica's capacity first (only if
                                    DIR/capacity.json is missing: the second policy reuses it), then
                                    the open-loop ramp (default 30 s low, 180 s high, 120 s low again);
                                    every request and a replica sample per second go to DIR as they
                                    come; stops the server at the end
    saturate --out DIR --policy P   closed loop with --saturate-concurrency clients (enough to fill two
                                    replicas' batches) for --saturate-s: the policy scales 1 -> 2 on its
                                    own; output tok/s with two running vs one (issue 20's 1.9x goal).
                                    Run it after `ramp --keep-server` (one replica again by then, and
                                    DIR/capacity.json there); stops the server unless --keep-server
    wait --out DIR --policy P       waits until a started server is healthy (after `start --no-wait`,
                                    or a start call cut off while the checkpoint was being made)
    stop --out DIR --policy P       stops a policy's server (after a ramp call was cut off)
    summarize --out DIR             simulates each measured run; DIR/summary.json (goals) and plots

Run `default` first: its probe sets the load for both, and the `llm` policy's start then knows one
replica's capacity (`autoscaling.target_rps_per_replica` = --target-rps-factor x it, as `llmserve
autoscale` would write it). Both policies get the same replica bounds, target_ongoing_requests,
delays and look-back (`autoscaling/bench/ramp_settings.config_for`).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import sys
import time
from pathlib import Path

from autoscaling.bench import ramp_comparison as compare
from autoscaling.bench.host import gpu_name, log
from autoscaling.bench.priority_load import router_stats
from autoscaling.bench.ramp_driver import drive, drive_closed
from autoscaling.bench.ramp_load import MAX_NUM_SEQS, RampShape, base_config, class_slos
from autoscaling.bench.ramp_plots import goodput_over_time, replicas_over_time
from autoscaling.bench.ramp_settings import POLICIES, config_for
from autoscaling.bench.servers import release_gpu, start_server, stop_detached, wait_for_detached
from autoscaling.bench.start_phases import kv_cache_tokens
from autoscaling.bench.vllm_reference import SERVED_NAME, ensure_checkpoint, ours_serve_command
from autoscaling.loadtest.client import ClientOptions
from autoscaling.loadtest.runner import run_load
from serve_app.config import AppConfig, load_config, parse_config
from serve_app.local import APP_NAME

PORT = 8000


def base_url(args: argparse.Namespace) -> str:
    return args.base_url or f"http://127.0.0.1:{PORT}"


def shape(args: argparse.Namespace) -> RampShape:
    return RampShape(low_s=args.low_s, high_s=args.high_s, low_again_s=args.low_again_s, low_load=args.low_load,
                     high_load=args.high_load, prompt_len=args.prompt_len, output_len=args.output_len, seed=args.seed)


def length_range(text: str) -> tuple[int, int]:
    """`LO,HI` tokens, both included."""
    lo, _, hi = text.partition(",")
    return int(lo), int(hi or lo)


def saved_capacity(args: argparse.Namespace) -> dict | None:
    path = args.out / "capacity.json"
    return json.loads(path.read_text()) if path.exists() else None


def policy_config(args: argparse.Namespace) -> AppConfig:
    """The config `start` deploys for --policy (a dry run's summarize rebuilds it: no config file there)."""
    base = base_config(args.model_dir, PORT, str(args.compile_cache_dir) if args.compile_cache_dir else None)
    capacity = args.capacity_rps or (saved_capacity(args) or {}).get("capacity_rps")
    if capacity and args.target_rps_factor > 0:
        base["autoscaling"] = {"target_rps_per_replica": round(args.target_rps_factor * capacity, 3)}
    return config_for(parse_config(base), args.policy, args)


def start(args: argparse.Namespace) -> int:
    ensure_checkpoint(args.model_dir, args.shape)
    config = policy_config(args)
    command = ours_serve_command(config.model_dump(mode="json"), args.out / f"{args.policy}_config.yaml")
    server = start_server(command, args.out / f"{args.policy}_server.log", env={"CUDA_VISIBLE_DEVICES": "0,1"})
    state = {"pid": server.pid, "command": shlex.join(command), "gpus": "0,1", "started": time.time()}
    (args.out / f"{args.policy}_server.json").write_text(json.dumps(state, indent=2))
    if not args.no_wait:
        wait_for_server(args)
    return 0


def wait_for_server(args: argparse.Namespace) -> dict:
    return wait_for_detached(args.out / f"{args.policy}_server.json", f"{base_url(args)}/health", args.ready_timeout_s,
                             args.out / f"{args.policy}_server.log", args.policy)


def stop(args: argparse.Namespace) -> None:
    stop_detached(json.loads((args.out / f"{args.policy}_server.json").read_text())["pid"])
    release_gpu()


def options(args: argparse.Namespace) -> ClientOptions:
    # The class as the `x-priority` header, as the load driver sends it to our app.
    return ClientOptions(base_url(args), args.served_name, priority_header=True, timeout_s=args.request_timeout_s)


def probe_capacity(args: argparse.Namespace) -> dict:
    """One replica's closed-loop capacity (requests/s), saved for the other policy's ramp."""
    spec = shape(args).probe(args.probe_concurrency, args.probe_requests)
    planned = spec.plan()
    result = asyncio.run(run_load(spec, options(args), progress=False, command="probe"))
    overall = result.overall
    capacity = {"capacity_rps": overall["request_throughput_rps"], "output_tok_s": overall["output_token_throughput_tps"],
                "completed": overall["completed"], "sent": overall["sent"], "concurrency": args.probe_concurrency,
                "policy": args.policy, "lengths": [[p.prompt_len, p.max_tokens] for p in planned]}
    (args.out / "capacity.json").write_text(json.dumps(capacity))
    log(f"probe: {capacity['capacity_rps']:.2f} req/s, {capacity['output_tok_s']:.0f} output tok/s with one replica")
    return capacity


def replica_sampler(args: argparse.Namespace):
    """A blocking read of Serve's replica states (this process joins the app's local Ray cluster as a
    driver) and of our router's queue; with --replicas-from router, the router's routable replicas stand
    for the running ones (a dry run against a server whose Ray cluster is not ours to join)."""
    from autoscaling.ramp import running_replicas

    if args.replicas_from == "serve":
        import ray

        ray.init(address="auto", logging_level="ERROR", log_to_driver=False)

    def sample() -> dict:
        running, total = running_replicas(APP_NAME) if args.replicas_from == "serve" else (None, None)
        asked = time.perf_counter()
        stats = router_stats(base_url(args), quiet=True) or {}
        answered_s = round(time.perf_counter() - asked, 3)
        # The ingress's event loop: how late its watchdog's beats woke lately, and stalls so far (a loop
        # falling behind shows as growing lag; one blocked outright as a stall, with its stack in the log).
        loop = (stats.get("ingress") or {}).get("loop_stalls") or {}
        return {"running": running, "total": total, "queue_depth": stats.get("queue_depth"),
                "router_replicas": len(stats["replicas"]) if "replicas" in stats else None,
                "ingress_loop_lag_max_s": (loop.get("lag_recent") or {}).get("max_s"),
                "ingress_loop_stalls": loop.get("stalls"), "stats_answered_s": answered_s}

    return sample


@contextlib.contextmanager
def recording(prefix: Path):
    """Callbacks writing each finished request and each replica sample to PREFIX_requests.jsonl and
    PREFIX_timeline.jsonl as they come (a call cut off at its time limit keeps what had finished)."""
    with open(f"{prefix}_requests.jsonl", "w") as requests, open(f"{prefix}_timeline.jsonl", "w") as timeline:
        def on_record(request, record) -> None:
            requests.write(json.dumps(compare.from_record(record, request.max_tokens).to_dict()) + "\n")
            requests.flush()

        def on_sample(sample: dict) -> None:
            timeline.write(json.dumps(sample) + "\n")
            timeline.flush()

        yield on_record, on_sample


@contextlib.contextmanager
def healthy_server(args: argparse.Namespace):
    """The started server's state once healthy (None in a dry run against --base-url); stopped at the
    end unless --keep-server."""
    state = None if args.base_url else wait_for_server(args)
    try:
        yield state
    finally:
        if state is not None and not args.keep_server:
            stop(args)


def save_run(prefix: Path, run: dict) -> None:
    Path(f"{prefix}.json").write_text(json.dumps(run, indent=2))


def ramp(args: argparse.Namespace) -> int:
    with healthy_server(args) as state:
        capacity = ({"capacity_rps": args.capacity_rps, "given": True} if args.capacity_rps
                    else saved_capacity(args) or probe_capacity(args))
        ramp_shape = shape(args)
        planned = ramp_shape.workload(capacity["capacity_rps"]).plan()
        prefix = args.out / args.policy
        schedule = [[round(p.send_offset_s, 4), p.class_name, p.prompt_len, p.max_tokens] for p in planned]
        run = {"policy": args.policy, "gpu": gpu_name(), "script": shlex.join([sys.executable, *sys.argv]),
               "server_command": state and state["command"], "healthy_after_s": state and state["healthy_after_s"],
               "capacity_rps": capacity["capacity_rps"], "shape": ramp_shape.to_dict(), "phases": ramp_shape.phases(),
               "requests_planned": len(planned), "finished": False}
        save_run(prefix, run)
        Path(f"{prefix}_schedule.json").write_text(json.dumps(schedule))
        log(f"{args.policy}: ramp of {len(planned)} requests over {ramp_shape.duration_s():.0f} s at "
            f"{args.low_load}x / {args.high_load}x of {capacity['capacity_rps']:.2f} req/s")
        with recording(prefix) as (on_record, on_sample):
            unfinished = asyncio.run(drive(planned, options(args), on_record, replica_sampler(args), on_sample,
                                           tail_timeout_s=args.tail_timeout_s))
        save_run(prefix, {**run, "finished": True, "unfinished": [p.index for p in unfinished]})
        log(f"{args.policy}: ramp done, {len(unfinished)} requests still open at the end (cancelled)")
    return 0


def saturate(args: argparse.Namespace) -> int:
    with healthy_server(args) as state:
        capacity = saved_capacity(args) or {}
        # Enough requests for the clients to keep sending at twice the probed rate (and more) to the end.
        enough = args.saturate_concurrency + int(3 * (capacity.get("capacity_rps") or 20.0) * args.saturate_s)
        planned = shape(args).probe(args.saturate_concurrency, enough).plan()
        prefix = args.out / f"saturate_{args.policy}"
        run = {"policy": args.policy, "gpu": gpu_name(), "script": shlex.join([sys.executable, *sys.argv]),
               "server_command": state and state["command"], "concurrency": args.saturate_concurrency,
               "duration_s": args.saturate_s, "finished": False}
        save_run(prefix, run)
        log(f"{args.policy}: closed loop, {args.saturate_concurrency} clients for {args.saturate_s:.0f} s")
        with recording(prefix) as (on_record, on_sample):
            cancelled = asyncio.run(drive_closed(planned, args.saturate_concurrency, args.saturate_s, options(args),
                                                 on_record, replica_sampler(args), on_sample,
                                                 tail_timeout_s=args.tail_timeout_s))
        save_run(prefix, {**run, "finished": True, "cancelled": cancelled})
        log(f"{args.policy}: saturation done, {cancelled} requests still open at the end (cancelled)")
    return 0


def read_requests(path: Path) -> list[compare.RampRequest]:
    return [compare.RampRequest.from_dict(json.loads(line)) for line in path.read_text().splitlines() if line]


def read_timeline(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def replica_samples(timeline: list[dict]) -> list[tuple[float, int, int]]:
    """(t_s, running, total) samples; with no Serve status (a dry run), the router's replicas for both."""
    return [(s["t_s"], s["running"], s["total"]) if s.get("running") is not None
            else (s["t_s"], s["router_replicas"], s["router_replicas"])
            for s in timeline if s.get("running") is not None or s.get("router_replicas") is not None]


def load_saturation(args: argparse.Namespace, capacity: dict | None) -> dict | None:
    prefix = args.out / "saturate_llm"
    if not Path(f"{prefix}.json").exists():
        return None
    run = json.loads(Path(f"{prefix}.json").read_text())
    requests = read_requests(Path(f"{prefix}_requests.jsonl"))
    figures = compare.saturated_scaling(requests, replica_samples(read_timeline(Path(f"{prefix}_timeline.jsonl"))), run["duration_s"],
                                        probe_tok_s=(capacity or {}).get("output_tok_s"))
    return {**figures, "requests": len(requests), "served": sum(r.kind == "served" for r in requests),
            "concurrency": run["concurrency"], "finished": run["finished"], "script": run["script"]}


# ---- summarize ----------------------------------------------------------------------------------------
def load_run(args: argparse.Namespace, policy: str) -> dict | None:
    out = args.out
    if not (out / f"{policy}.json").exists() or not (out / f"{policy}_requests.jsonl").exists():
        return None
    run = json.loads((out / f"{policy}.json").read_text())
    run["requests"] = read_requests(out / f"{policy}_requests.jsonl")
    timeline = read_timeline(out / f"{policy}_timeline.jsonl")
    run["samples"] = replica_samples(timeline)
    run["queue"] = [(s["t_s"], s["queue_depth"]) for s in timeline if s.get("queue_depth") is not None]
    run["schedule"] = json.loads((out / f"{policy}_schedule.json").read_text())
    config_path = out / f"{policy}_config.yaml"
    run["config"] = load_config(config_path) if config_path.exists() else policy_config(argparse.Namespace(
        **{**vars(args), "policy": policy}))
    log_path = out / f"{policy}_server.log"
    run["kv_cache_tokens"] = kv_cache_tokens(log_path.read_text(errors="replace")) if log_path.exists() else None
    return run


def simulate(args: argparse.Namespace, run: dict, capacity: dict | None) -> tuple[dict, dict]:
    """The run's requests through the simulator: its config, its measured replica start, the profile
    rescaled to the measured capacity (when the probe's requests are known)."""
    from autoscaling.bench import ramp_simulation as sim
    from autoscaling.simulator.fit import PROFILE
    from autoscaling.simulator.step_model import StepModel

    config = run["config"]
    engine = sim.engine_config(config, run["kv_cache_tokens"] and run["kv_cache_tokens"] // 16)
    model, calibration = StepModel.load(PROFILE), {"step_time_factor": 1.0, "note": "H100 profile as fitted"}
    if capacity and capacity.get("lengths"):
        model, calibration = sim.calibrated_model(model, engine, capacity["lengths"], capacity["concurrency"],
                                                  capacity["capacity_rps"])
    starts = compare.replica_starts(run["samples"])
    startup = starts[0]["start_s"] if starts else args.sim_startup_s
    simulated = sim.simulate_ramp(config, model, engine, sim.sim_requests(run["schedule"]), startup, seed=args.seed)
    info = {"startup_delay_s": startup, "startup_from": "measured" if starts else "--sim-startup-s",
            "calibration": calibration, "engine": engine.__dict__, "totals": simulated.totals}
    return simulated, info


def summarize(args: argparse.Namespace) -> dict:
    out = args.out
    runs = {p: run for p in POLICIES if (run := load_run(args, p)) is not None}
    capacity = saved_capacity(args)
    figures, simulated_figures, errors, simulation, sims = {}, {}, {}, {}, {}
    phases = next(iter(runs.values()))["phases"] if runs else RampShape().phases()
    slos = {}
    for policy, run in runs.items():
        slos = class_slos(run["config"])
        figures[policy] = compare.run_figures(run["requests"], run["samples"], slos, phases, run["queue"])
        figures[policy]["finished"] = run["finished"]
        sims[policy], simulation[policy] = simulate(args, run, capacity)
        s = sims[policy]
        simulated_figures[policy] = compare.run_figures(s.requests, s.samples, slos, phases, s.queue)
        errors[policy] = compare.simulator_error(figures[policy], simulated_figures[policy], run["samples"], s.samples,
                                                 phases[-1][2])
    saturation = load_saturation(args, capacity)
    commands = [c for run in runs.values() for c in (run.get("script"), run.get("server_command")) if c]
    commands += [saturation["script"]] if saturation else []
    summary = {"gpu": next((r["gpu"] for r in runs.values()), "unknown"), "commands": commands,
               "goals": compare.goals(figures, errors, saturation), "saturation": saturation,
               "capacity": capacity and {k: v for k, v in capacity.items() if k != "lengths"},
               "measured": figures, "simulated": simulated_figures, "simulator_error": errors, "simulation": simulation}
    if runs and slos:
        summary["plots"] = [replicas_over_time({p: r["samples"] for p, r in runs.items()},
                                               {p: s.samples for p, s in sims.items()}, phases, out).name,
                            goodput_over_time({p: r["requests"] for p, r in runs.items()},
                                              {p: s.requests for p, s in sims.items()}, slos, phases, out).name]
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["start", "wait", "ramp", "saturate", "stop", "summarize"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--policy", choices=POLICIES)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/models/llama2-7b"))
    parser.add_argument("--shape", default="llama2-7b")
    parser.add_argument("--compile-cache-dir", type=Path, default=Path("/tmp/ramp_compile_cache"),
                        help="engine.compile_cache_dir, shared by every start (the second replica's start is warm)")
    parser.add_argument("--base-url", help="ramp a server already running there (no start/stop; a dry run)")
    parser.add_argument("--served-name", default=SERVED_NAME, help="the model name requests ask for")
    parser.add_argument("--replicas-from", choices=["serve", "router"], default="serve",
                        help="ramp: replica counts from Serve's status (joins the local Ray cluster) or, in a dry run, "
                        "the router's routable replicas")
    parser.add_argument("--no-wait", action="store_true", help="start: return once the server process runs")
    parser.add_argument("--keep-server", action="store_true", help="ramp: leave the server running at the end")
    parser.add_argument("--ready-timeout-s", type=float, default=500)
    parser.add_argument("--request-timeout-s", type=float, default=120)
    parser.add_argument("--tail-timeout-s", type=float, default=45, help="after the last send, wait this long for "
                        "open requests, then cancel them (the call must end within 10 minutes)")
    parser.add_argument("--capacity-rps", type=float, help="one replica's capacity (default: DIR/capacity.json, else probed)")
    parser.add_argument("--probe-concurrency", type=int, default=MAX_NUM_SEQS)
    parser.add_argument("--probe-requests", type=int, default=3 * MAX_NUM_SEQS)
    parser.add_argument("--target-rps-factor", type=float, default=0.8, help="llm policy: target_rps_per_replica as "
                        "this x the capacity (known at start when capacity.json exists or --capacity-rps); 0: unset")
    defaults = RampShape()
    parser.add_argument("--low-s", type=float, default=defaults.low_s)
    parser.add_argument("--high-s", type=float, default=defaults.high_s)
    parser.add_argument("--low-again-s", type=float, default=defaults.low_again_s)
    parser.add_argument("--low-load", type=float, default=defaults.low_load, help="low rate over one replica's capacity")
    parser.add_argument("--high-load", type=float, default=defaults.high_load, help="high rate over one replica's capacity")
    parser.add_argument("--prompt-len", type=length_range, default=defaults.prompt_len, help="LO,HI tokens (uniform)")
    parser.add_argument("--output-len", type=length_range, default=defaults.output_len, help="LO,HI tokens (uniform)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=2)
    parser.add_argument("--target-ongoing-requests", type=float, default=MAX_NUM_SEQS / 2,
                        help="half a replica's batch: one saturated replica asks for two")
    parser.add_argument("--upscale-delay-s", type=float, default=10)
    parser.add_argument("--downscale-delay-s", type=float, default=45, help="short, so the scale-down falls in the run")
    parser.add_argument("--look-back-period-s", type=float, default=15, help="above Serve's 10 s metrics push")
    parser.add_argument("--metrics-push-s", type=float, default=1, help="replicas' autoscaling metrics push period")
    parser.add_argument("--saturate-concurrency", type=int, default=5 * MAX_NUM_SEQS // 2,
                        help="saturate: closed-loop clients (more than two replicas' batches hold)")
    parser.add_argument("--saturate-s", type=float, default=150, help="saturate: how long the clients send")
    parser.add_argument("--sim-startup-s", type=float, default=60, help="simulated replica start when the run shows none")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.phase == "summarize":
        print(json.dumps(summarize(args)["goals"], indent=2, default=str))
        return 0
    if args.policy is None:
        parser.error(f"{args.phase} needs --policy")
    if args.phase == "start":
        return start(args)
    if args.phase == "stop":
        stop(args)
        return 0
    if args.phase == "wait":
        wait_for_server(args)
        return 0
    if args.phase == "saturate":
        return saturate(args)
    return ramp(args)


if __name__ == "__main__":
    sys.exit(main())
