"""Issue 17's goals on two H200s of one host: cache-aware routing (two replicas of ours, one per GPU,
one Ray Serve app) and tenant fairness (one replica). Pure parts: autoscaling/bench/cache_routing.py.

    start --out DIR --part P     starts our app for part P in the background and returns
    measure --out DIR --part P   waits until it is healthy, measures, stops it; writes DIR/P.json
    summarize --out DIR          summary.json (goals, measured, met) and the plots from the part files
    stop --out DIR --part P      stops a part's server (after a failed measure)

Parts, in this order (routing-least_outstanding_tokens first: its capacity sets every mode's rate):
  routing-least_outstanding_tokens, routing-approximate_prefix, routing-precise_prefix
      a closed-loop run of the shared-prefix workload (capacity, and the same cache warm-up for every
      mode), then it open-loop at --rate-factor x the baseline's capacity, then the no-shared-prefix
      workload at --no-prefix-load x that capacity; routing-precise_prefix adds the `vllm bench serve`
      prefix_repetition cross-check at the same rate.
  fairness   one replica: capacity; heavy:light 10:1 at twice it; light alone; gold:silver weights 2:1.

With one GPU (`--share-one-gpu` on every routing part's start and measure): both replicas on GPU 0, each
with half of it; the KV caches are sized as with two, so the cache's effect is measured, but the two
engines share one GPU's compute, and `summary.json` says `replicas_share_one_gpu: true`.

Each mode is its own server start: the config reaches every deployment as constructor arguments (and
`precise_prefix` turns on the engines' KV event publisher), so changing `router.routing` restarts the
engines (Ray Serve keeps replicas only when just `user_config` changes). Each part's start and measure
each fit one 10-minute device call. KV caches are sized so the tenants' prefixes fit two replicas but
not one (`kv_cache_tokens`).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

from autoscaling.bench import cache_routing as bench
from autoscaling.bench.cache_routing_plots import tenant_goodput, ttft_cdf
from autoscaling.bench.host import gpu_name, log
from autoscaling.bench.priority_load import router_stats
from autoscaling.bench.servers import release_gpu, start_server, stop_detached, wait_for_detached
from autoscaling.bench.vllm_bench import headline, prefix_repetition_command, run_bench
from autoscaling.bench.vllm_reference import SERVED_NAME, ensure_checkpoint, ours_serve_command
from autoscaling.loadtest.arrivals import GammaArrivals
from autoscaling.loadtest.client import ClientOptions
from autoscaling.loadtest.lengths import Fixed
from autoscaling.loadtest.metrics import Slo
from autoscaling.loadtest.runner import run_load
from autoscaling.loadtest.shared_prefix import SharedPrefixSpec
from serve_app.memory.budget import ModelShape
from serve_app.memory.estimates import kv_bytes_per_token
from serve_app.statistics import percentile

PORT = 8000
ROUTING_PARTS = {f"routing-{mode}": mode for mode in bench.ROUTING_MODES}
PARTS = (*ROUTING_PARTS, "fairness")
SLOS = {bench.CLASS["name"]: Slo(bench.CLASS["ttft_slo_s"], bench.CLASS["tpot_slo_s"])}


def base_url(args: argparse.Namespace) -> str:
    return args.base_url or f"http://127.0.0.1:{PORT}"


def workload(args: argparse.Namespace) -> bench.RoutingWorkload:
    return bench.RoutingWorkload(tenants=args.tenants, prefix_len=args.prefix_len, suffix_len=args.suffix_len,
                                 output_len=args.output_len)


def part_config(args: argparse.Namespace) -> dict:
    if args.part == "fairness":
        return bench.fairness_config(args.model_dir, PORT)
    hf_config = json.loads((args.model_dir / "config.json").read_text())
    per_token = kv_bytes_per_token(ModelShape.from_hf_config(hf_config))
    tokens = bench.kv_cache_tokens(workload(args), bench.MAX_NUM_SEQS)
    log(f"KV cache per replica: {tokens} tokens x {per_token} B = {tokens * per_token / 2**30:.1f} GiB "
        f"(prefixes: {workload(args).prefix_tokens()} tokens)")
    return bench.routing_config(args.model_dir, PORT, ROUTING_PARTS[args.part],
                                bench.kv_cache_memory_bytes(tokens, per_token), share_one_gpu=args.share_one_gpu)


def start(args: argparse.Namespace) -> int:
    ensure_checkpoint(args.model_dir, args.shape)
    command = ours_serve_command(part_config(args), args.out / f"{args.part}_config.yaml")
    gpus = "0" if args.part == "fairness" or args.share_one_gpu else "0,1"
    server = start_server(command, args.out / f"{args.part}_server.log", env={"CUDA_VISIBLE_DEVICES": gpus})
    state = {"pid": server.pid, "command": shlex.join(command), "gpus": gpus, "started": time.time()}
    (args.out / f"{args.part}_server.json").write_text(json.dumps(state, indent=2))
    return 0


def wait_for_server(args: argparse.Namespace) -> dict:
    return wait_for_detached(args.out / f"{args.part}_server.json", f"{base_url(args)}/health", args.ready_timeout_s,
                             args.out / f"{args.part}_server.log", args.part)


def load(args: argparse.Namespace, name: str, spec: SharedPrefixSpec, keys: dict[str, str] | None = None) -> dict:
    """One load-test run, its full result saved under DIR/raw/; the part keeps `run_entry` of it."""
    if keys:
        spec = dataclasses.replace(spec, api_keys=tuple(keys[n] for n in spec.tenant_names()))
    options = ClientOptions(base_url(args), args.served_name, send_priority=False, timeout_s=args.request_timeout_s)
    before = router_stats(base_url(args), quiet=True)
    result = asyncio.run(run_load(spec, options, slos=SLOS, progress=False, command=f"{args.part}:{name}"))
    after = router_stats(base_url(args), quiet=True)
    raw = result.to_dict(include_requests=True)
    (args.out / "raw").mkdir(exist_ok=True)
    (args.out / "raw" / f"{args.part}_{name}.json").write_text(json.dumps({**raw, "router_stats": after}))
    entry = bench.run_entry(raw, bench.measured_hit_rate(before, after))
    o = entry["overall"]
    log(f"{args.part} {name}: {o['completed']}/{o['sent']} completed, TTFT p90 "
        f"{percentile(entry['ttfts_s'], 90)}, {o['output_token_throughput_tps']:.0f} out tok/s, hit rate "
        f"{(entry['measured_prefix_hit_rate'] or {}).get('hit_rate')} (ideal {entry['ideal_prefix_hit_rate']})")
    return entry


def capacity_rps(entry: dict) -> float:
    return entry["overall"]["request_throughput_rps"]


def save(args: argparse.Namespace, part: dict) -> None:
    (args.out / f"{args.part}.json").write_text(json.dumps(part, indent=2))


def measure_routing(args: argparse.Namespace, part: dict) -> None:
    shape = workload(args)
    closed = shape.shared(float("inf"), 0, seed=0, max_concurrency=args.capacity_concurrency,
                          num_requests=args.capacity_requests)
    part["capacity"] = load(args, "capacity", closed)
    if part["mode"] == bench.BASELINE:
        part["baseline_capacity_rps"] = capacity_rps(part["capacity"])
    else:
        baseline = json.loads((args.out / f"routing-{bench.BASELINE}.json").read_text())
        part["baseline_capacity_rps"] = baseline["baseline_capacity_rps"]
    # Above the baseline's capacity: what the baseline cannot keep up with, prefix hits can.
    rate = args.rate or args.rate_factor * part["baseline_capacity_rps"]
    part["rate_rps"] = rate
    save(args, part)
    part["shared_prefix"] = load(args, "shared_prefix", shape.shared(rate, args.run_s, seed=1))
    save(args, part)
    # Below capacity, where routing overhead (not queueing) would show in TTFT p99.
    part["no_prefix_rate_rps"] = args.no_prefix_load * part["baseline_capacity_rps"]
    part["no_prefix"] = load(args, "no_prefix", shape.no_prefix(part["no_prefix_rate_rps"], args.no_prefix_s))
    save(args, part)
    if part["mode"] == bench.PRECISE and args.cross_check_s > 0:
        part["cross_check"] = cross_check(args, shape, rate, part["shared_prefix"])


def cross_check(args: argparse.Namespace, shape: bench.RoutingWorkload, rate: float, ours: dict) -> dict:
    """`vllm bench serve`'s prefix_repetition load at the same rate and lengths, beside our driver's run."""
    prompts = max(shape.tenants, round(rate * args.cross_check_s) // shape.tenants * shape.tenants)
    command = prefix_repetition_command(base_url(args), args.served_name, str(args.model_dir), args.out / "raw",
                                        f"{args.part}_vllm_bench_prefix_repetition.json",
                                        prefix_len=shape.prefix_len, suffix_len=shape.suffix_len,
                                        num_prefixes=shape.tenants, output_len=shape.output_len,
                                        num_prompts=prompts, request_rate=f"{rate:.3f}", seed=1,
                                        extra=["--ready-check-timeout-sec", "0", "--disable-tqdm"])
    try:
        result = run_bench(command, args.out / f"{args.part}_vllm_bench.log", timeout_s=args.cross_check_s * 3 + 120)
    except Exception as error:  # noqa: BLE001 - the cross-check is reported, never fatal to the part
        return {"error": repr(error), "command": shlex.join(command)}
    return {"vllm_bench": headline(result), "command": result["command"],
            "ours_driver": {"p90_ttft_ms": 1000 * (percentile(ours["ttfts_s"], 90) or 0),
                            "p99_ttft_ms": 1000 * (percentile(ours["ttfts_s"], 99) or 0),
                            "output_throughput": ours["overall"]["output_token_throughput_tps"]}}


def measure_fairness(args: argparse.Namespace, part: dict) -> None:
    keys = bench.fairness_keys()
    closed = SharedPrefixSpec(arrival=GammaArrivals(float("inf")), tenants=1, prefix_len=0,
                              suffix_len=args.fairness_prompt_len, output_len=Fixed(args.fairness_output_len),
                              conversations=None, class_name=bench.CLASS["name"],
                              num_requests=args.capacity_requests, max_concurrency=args.capacity_concurrency,
                              names=("light",))
    part["capacity"] = load(args, "capacity", closed, keys)
    part["capacity_rps"] = args.capacity_rps or capacity_rps(part["capacity"])
    save(args, part)
    specs = bench.fairness_specs(part["capacity_rps"], args.fairness_s, prompt_len=args.fairness_prompt_len,
                                 output_len=args.fairness_output_len)
    for name, spec in specs.items():
        part[name] = load(args, name, spec, keys)
        save(args, part)


def measure(args: argparse.Namespace) -> int:
    state = None if args.base_url else wait_for_server(args)
    part = {"part": args.part, "gpu": gpu_name(), "script": shlex.join(sys.argv),
            "server_command": state and state["command"], "healthy_after_s": state and state["healthy_after_s"],
            "replicas_share_one_gpu": args.share_one_gpu and args.part != "fairness"}
    try:
        if args.part == "fairness":
            measure_fairness(args, part)
        else:
            part["mode"] = ROUTING_PARTS[args.part]
            measure_routing(args, part)
        save(args, part)
    finally:
        if state is not None:
            stop(args)
    return 0


def stop(args: argparse.Namespace) -> None:
    stop_detached(json.loads((args.out / f"{args.part}_server.json").read_text())["pid"])
    release_gpu()


def summarize(out: Path) -> dict:
    """summary.json and the plots from whatever part files DIR holds (a missing part: an unmet goal)."""
    routing = {mode: json.loads((out / f"{name}.json").read_text())
               for name, mode in ROUTING_PARTS.items() if (out / f"{name}.json").exists()}
    routing = {mode: part for mode, part in routing.items() if "no_prefix" in part}
    fairness_path = out / "fairness.json"
    fairness = json.loads(fairness_path.read_text()) if fairness_path.exists() else None
    if fairness is not None and "weighted" not in fairness:
        fairness = None
    parts = [*routing.values(), *([fairness] if fairness else [])]
    commands = [c for p in parts for c in (p.get("script"), p.get("server_command")) if c]
    gpu = next((p["gpu"] for p in parts), "unknown")
    summary = bench.summary(routing, fairness, commands, gpu)
    summary["plots"] = [ttft_cdf(routing, out).name] if routing else []
    if fairness:
        summary["plots"].append(tenant_goodput(fairness, out).name)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["start", "measure", "summarize", "stop"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--part", choices=PARTS)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/models/llama2-7b"))
    parser.add_argument("--shape", default="llama2-7b")
    parser.add_argument("--base-url", help="measure a server already running there (no start/stop; a dry run)")
    parser.add_argument("--served-name", default=SERVED_NAME, help="the model name requests ask for")
    parser.add_argument("--ready-timeout-s", type=float, default=500)
    parser.add_argument("--request-timeout-s", type=float, default=120)
    defaults = bench.RoutingWorkload()
    parser.add_argument("--tenants", type=int, default=defaults.tenants)
    parser.add_argument("--prefix-len", type=int, default=defaults.prefix_len)
    parser.add_argument("--suffix-len", type=int, default=defaults.suffix_len)
    parser.add_argument("--output-len", type=int, default=defaults.output_len)
    parser.add_argument("--capacity-requests", type=int, default=400, help="closed-loop capacity run's requests")
    # The engine's whole batch: with fewer clients (64 in the first H200 run) the closed loop measured 29 req/s
    # of a replica that then served 46 req/s open-loop, so "twice capacity" was 1.3x and no tenant was held back.
    parser.add_argument("--capacity-concurrency", type=int, default=bench.MAX_NUM_SEQS)
    parser.add_argument("--rate", type=float, help="routing parts' arrival rate (default: from the baseline)")
    parser.add_argument("--rate-factor", type=float, default=1.5,
                        help="routing rate over the baseline's closed-loop capacity (above it: the cache decides)")
    parser.add_argument("--run-s", type=float, default=120, help="shared-prefix arrival window")
    parser.add_argument("--no-prefix-load", type=float, default=0.7, help="no-prefix rate over the baseline's capacity")
    parser.add_argument("--no-prefix-s", type=float, default=60)
    parser.add_argument("--cross-check-s", type=float, default=60, help="vllm bench window; 0: none")
    parser.add_argument("--capacity-rps", type=float, help="fairness: one replica's capacity (default: measured)")
    parser.add_argument("--fairness-s", type=float, default=60)
    parser.add_argument("--share-one-gpu", action="store_true",
                        help="routing parts: both replicas on GPU 0 (where two GPUs are not lent; the summary says so)")
    parser.add_argument("--fairness-prompt-len", type=int, default=512)
    parser.add_argument("--fairness-output-len", type=int, default=128)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.phase == "summarize":
        print(json.dumps(summarize(args.out)["goals"], indent=2))
        return 0
    if args.part is None:
        parser.error(f"{args.phase} needs --part")
    if args.phase == "start":
        return start(args)
    if args.phase == "stop":
        stop(args)
        return 0
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
