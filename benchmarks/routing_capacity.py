"""The request path without an engine: where a first token waits, and how many requests/s routing sustains.

Our whole app runs (Ray Serve's HTTP proxy, ingress replicas, routing, controller, Ray hops, response
delivery) with `serve_app.bench.stand_in_replica.StandInReplica` in place of the vLLM replicas: it
answers at once, so what a client waits for is our path alone.

1. Breakdown: streamed requests one at a time; the client's time to first event and, from the
   traces, where it went: proxy and ingress before routing, routing (admission + queue), the Ray hop
   to the replica, the replica, the hop back with the first event, and the proxy's write to the client.
2. The same breakdown under a token load (--background-streams > 0): that many clients keep streaming
   --background-tokens events each, one every --token-interval-s, as decoding requests would; the probes
   then show which step of a first token grows with the tokens the path relays. With --profile-s, py-spy
   samples the ingress and the stand-in replica meanwhile: the share of their samples in our code
   (serve_app) and the top frames (`autoscaling.bench.stack_profile`), collapsed stacks in OUT.
3. Capacity: closed-loop clients (--concurrency) sending non-streamed requests for --seconds, with
   1 and 2 ingress replicas: completed requests/s and latency percentiles.

    python benchmarks/routing_capacity.py --out benchmarks/results/routing_capacity_cpu

Writes OUT/routing_capacity.json and OUT/routing_capacity.png. Run from a checkout of any commit
whose replicas take `run(request, reply_to)` calls, to compare request paths on one machine.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx

from autoscaling.bench.host import checkout_commit
from serve_app.bench.stand_in_replica import StandInReplica
from serve_app.config import parse_config
from serve_app.statistics import mean, percentile, rounded_ms

APP = "llmserve"
BODY = {"model": "stand-in", "prompt": "routing capacity", "max_tokens": 4}


# Set once per run (`--front`, `--delivery`): HAProxy mode is chosen when Ray starts.
PATH_SETTINGS: dict[str, str] = {}


def config(ingress_replicas: int, replicas: int, tracing: bool, throughput_mode: bool,
           stream_writes_per_s: float | None = None, first_parts_own_call: bool | None = None):
    """`stream_writes_per_s`: None keeps the config's default; 0 turns stream pacing off.
    `first_parts_own_call`: None keeps the config's default."""
    pacing: dict = {} if stream_writes_per_s is None else {"stream_writes_per_s": stream_writes_per_s or None}
    if first_parts_own_call is not None:
        pacing["first_parts_own_call"] = first_parts_own_call
    pacing.update(PATH_SETTINGS)
    return parse_config({
        "replicas": {"num_replicas": replicas, "num_cpus": 0.01},
        "engine": {"batch_size_policy": "vllm_default"},
        "http": {"ingress_replicas": ingress_replicas, "port": 8000, "ray_serve_throughput_optimized": throughput_mode,
                 **pacing},
        "telemetry": {"tracing_exporter": "memory" if tracing else "none", "metrics": False},
        # Admission measures the path: nothing is refused for a predicted wait in a closed loop.
        "priority_classes": [{"name": "bench", "ttft_slo_s": 30, "tpot_slo_s": 1, "queue_deadline_s": 300}],
        "default_priority": "bench",
    })


def deploy(app_config, token_interval_s: float = 0.0) -> str:
    """Deploy the app with stand-in replicas on the running local Ray Serve; returns its URL."""
    import serve_app.app as app_module
    from serve_app.local import start_local

    app_module.LLMReplica = StandInReplica  # the replica deployment's class, whatever the commit's build_app
    return start_local(app_config, ready_timeout_s=120, engine_overrides={"stand_in_token_interval_s": token_interval_s})


def percentiles_ms(values: list[float]) -> dict[str, float | None]:
    """{"p50_ms", "p90_ms", "p99_ms"} of `values` in seconds."""
    return rounded_ms({f"p{q}": percentile(values, q) for q in (50, 90, 99)})


async def first_event_s(client: httpx.AsyncClient, url: str, request_ids: list[str] | None = None) -> float:
    """Time to the first event of a streamed request; its request id (the completion's `cmpl-<id>`) is
    appended to `request_ids`."""
    started = time.perf_counter()
    async with client.stream("POST", f"{url}/v1/completions", json={**BODY, "stream": True}) as response:
        response.raise_for_status()
        lines = response.aiter_lines()
        async for line in lines:
            if line.startswith("data: {"):
                ttft = time.perf_counter() - started
                if request_ids is not None:
                    request_ids.append(json.loads(line[len("data: "):])["id"].removeprefix("cmpl-"))
                break
        async for _ in lines:
            pass
    return ttft


def spans_by_trace() -> dict[str, list[dict]]:
    from ray import serve

    spans: list[dict] = []
    for deployment in ("Ingress", "Router", "LLMReplica"):
        try:
            spans += serve.get_deployment_handle(deployment, app_name=APP).collected_spans.remote().result(timeout_s=30)
        except Exception:  # the commit has no such deployment (a router process, or none)
            continue
    traces: dict[str, list[dict]] = {}
    for span in spans:
        traces.setdefault(span["trace_id"], []).append(span)
    return traces


def breakdown(traces: dict[str, list[dict]]) -> dict[str, dict]:
    """Per step, ms percentiles over the requests whose four spans were all found."""
    steps: dict[str, list[float]] = {"ingress_before_routing": [], "routing_queue": [], "hop_to_replica": [],
                                     "replica_to_first_event": [], "hop_back_first_event": [],
                                     "ingress_first_token_total": []}
    for spans in traces.values():
        named = {s["name"]: s for s in spans}
        if not {"ingress.request", "router.queue_wait", "router.dispatch", "engine.generate"} <= named.keys():
            continue
        root, queue, dispatch, engine = (named[n] for n in ("ingress.request", "router.queue_wait",
                                                            "router.dispatch", "engine.generate"))
        ingress_first = next((e["time_ns"] for e in root["events"] if e["name"] == "first_token"), None)
        engine_first = next((e["time_ns"] for e in engine["events"] if e["name"] == "first_token"), None)
        if ingress_first is None or engine_first is None:
            continue
        s = 1e-9
        steps["ingress_before_routing"].append((queue["start_ns"] - root["start_ns"]) * s)
        steps["routing_queue"].append((queue["end_ns"] - queue["start_ns"]) * s)
        steps["hop_to_replica"].append((engine["start_ns"] - queue["end_ns"]) * s)
        steps["replica_to_first_event"].append((engine_first - engine["start_ns"]) * s)
        steps["hop_back_first_event"].append((ingress_first - engine_first) * s)
        steps["ingress_first_token_total"].append((ingress_first - root["start_ns"]) * s)
    return {step: {"n": len(values), **percentiles_ms(values)} for step, values in steps.items()}


async def overhead(url: str, requests: int, request_ids: list[str] | None = None) -> dict:
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(10):  # warm connections and code paths
            await first_event_s(client, url)
        ttfts = [await first_event_s(client, url, request_ids) for _ in range(requests)]
    return {"requests": requests, "client_first_event": percentiles_ms(ttfts),
            "client_first_event_mean_ms": rounded_ms({"mean": mean(ttfts)})["mean_ms"]}


PROFILED = {"ingress": "ServeReplica:llmserve:Ingress", "replica": "ServeReplica:llmserve:LLMReplica"}


def start_profiles(out: Path, seconds: float) -> dict[str, tuple[subprocess.Popen, Path]]:
    """py-spy on the first ingress and stand-in replica process for `seconds` (collapsed stacks)."""
    spies = {}
    for name, title in PROFILED.items():
        pids = subprocess.run(["pgrep", "-f", title], capture_output=True, text=True).stdout.split()
        if not pids:
            continue
        path = out / f"profile_{name}.txt"
        spies[name] = (subprocess.Popen(["py-spy", "record", "-p", pids[0], "-d", str(int(seconds)), "-r", "200",
                                         "--format", "raw", "--nonblocking", "-o", str(path)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path)
    return spies


def profile_shares(spies: dict[str, tuple[subprocess.Popen, Path]]) -> dict[str, dict]:
    from autoscaling.bench.stack_profile import shares

    result = {}
    for name, (spy, path) in spies.items():
        spy.wait()
        result[name] = shares(path.read_text()) if path.exists() else {"error": f"py-spy wrote no {path.name}"}
    return result


async def overhead_under_streams(url: str, requests: int, streams: int, tokens: int, request_ids: list[str],
                                 profile: tuple[Path, float] | None = None) -> dict:
    """`overhead` while `streams` clients keep streaming `tokens`-event responses; the events/s they
    received during the probes is the token load the path relayed. The probes' ids go to `request_ids`.
    `profile` (OUT, seconds): py-spy samples the processes on the path from the probes' start."""
    stop = asyncio.Event()
    events = 0

    async def stream_forever(client: aiohttp.ClientSession) -> None:
        nonlocal events
        body = {**BODY, "stream": True, "max_tokens": tokens}
        while not stop.is_set():
            async with client.post(f"{url}/v1/completions", json=body) as response:
                async for line in response.content:
                    events += line.startswith(b"data: {")

    # aiohttp, not httpx: httpx's pool polls every open connection whenever a request starts or ends,
    # which at hundreds of streams slows the client more than the server (the load driver's lesson).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:
        background = [asyncio.create_task(stream_forever(client)) for _ in range(streams)]
        await asyncio.sleep(3)  # the streams' first requests are under way
        started, events_before = time.perf_counter(), events
        spies = start_profiles(*profile) if profile else {}
        result = await overhead(url, requests, request_ids)
        result["background"] = {"streams": streams, "tokens_per_stream": tokens,
                                "events_per_s": round((events - events_before) / (time.perf_counter() - started))}
        if spies:
            result["profile"] = await asyncio.to_thread(profile_shares, spies)
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
    return result


async def closed_loop(url: str, concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                response = await client.post(f"{url}/v1/completions", json=BODY)
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
            except httpx.HTTPError:
                errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"concurrency": concurrency, "seconds": round(elapsed, 2), "completed": len(latencies), "errors": errors,
            "requests_per_s": round(len(latencies) / elapsed, 1), "latency": percentiles_ms(latencies)}


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    steps = {k: v["p50_ms"] or 0 for k, v in report["breakdown"].items() if k != "ingress_first_token_total"}
    left.barh(list(steps), list(steps.values()))
    left.set_xlabel("ms (p50)")
    left.set_title(f"first event, client p50 {report['overhead']['client_first_event']['p50_ms']} ms")
    runs = report["capacity"]
    if runs:
        right.bar([f"{r['ingress_replicas']} ingress" for r in runs], [r["requests_per_s"] for r in runs])
        right.set_ylabel("requests/s")
        right.set_title(f"closed loop, {runs[0]['concurrency']} clients, stand-in engine")
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=200, help="breakdown: sequential streamed requests")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--replicas", type=int, default=2, help="stand-in replicas")
    parser.add_argument("--ingress", type=int, nargs="*", default=[1, 2],
                        help="ingress replica counts to measure capacity with (none: skip)")
    parser.add_argument("--stream-writes-per-s", type=float, default=None,
                        help="under the token load: http.stream_writes_per_s (0: pacing off; default: the config's)")
    parser.add_argument("--first-parts-own-call", choices=["on", "off"], default=None,
                        help="under the token load: http.first_parts_own_call (default: the config's)")
    parser.add_argument("--background-streams", type=int, default=0,
                        help="breakdown again while this many clients keep streaming (0: skip)")
    parser.add_argument("--background-tokens", type=int, default=256, help="events per background stream")
    parser.add_argument("--token-interval-s", type=float, default=0.01,
                        help="the stand-in's time between a stream's events (a decode step)")
    parser.add_argument("--profile-s", type=float, default=0,
                        help="under the token load, py-spy the ingress and the stand-in replica this long (0: not)")
    parser.add_argument("--throughput-mode", choices=["on", "off"], default="on",
                        help="http.ray_serve_throughput_optimized (Ray Serve's throughput-optimized data plane)")
    parser.add_argument("--front", choices=["proxy", "haproxy"], default="proxy",
                        help="http.front: Ray Serve's Python proxy, or its HAProxy mode (needs --delivery pull or "
                        "direct)")
    parser.add_argument("--delivery", choices=["push", "pull", "direct"], default="push", help="http.delivery")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    PATH_SETTINGS.update(front=args.front, delivery=args.delivery)
    import ray
    from ray import serve

    report = {"commit": checkout_commit(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "command": "python benchmarks/routing_capacity.py " + shlex.join(sys.argv[1:]),
              "capacity": []}
    mode = args.throughput_mode == "on"
    url = deploy(config(1, args.replicas, tracing=True, throughput_mode=mode))
    report["ray_serve_env"] = {k: v for k, v in os.environ.items() if k.startswith("RAY_SERVE_")}
    report["overhead"] = asyncio.run(overhead(url, args.requests))
    report["breakdown"] = breakdown(spans_by_trace())
    # The same first parts by the ingress's own stamps (its last 10 s; `delivery` is the way back alone).
    report["first_part_path"] = httpx.get(f"{url}/v1/router/stats", timeout=30).json()["ingress"].get("first_part_path")
    print(json.dumps({key: report[key] for key in ("overhead", "breakdown", "first_part_path")}, indent=2), flush=True)
    if args.background_streams:
        serve.delete(APP)
        url = deploy(config(1, args.replicas, tracing=True, throughput_mode=mode,
                            stream_writes_per_s=args.stream_writes_per_s,
                            first_parts_own_call=None if args.first_parts_own_call is None
                            else args.first_parts_own_call == "on"), args.token_interval_s)
        probe_ids: list[str] = []
        loaded = asyncio.run(overhead_under_streams(url, args.requests, args.background_streams,
                                                    args.background_tokens, probe_ids,
                                                    (args.out, args.profile_s) if args.profile_s else None))
        wanted = set(probe_ids)  # the probes' traces, not the background streams'
        probes = {trace: spans for trace, spans in spans_by_trace().items()
                  if any(s["name"] == "engine.generate" and s["attributes"].get("llm.request_id") in wanted
                         for s in spans)}
        # Every first part of the last 10 s (the probes' and the background streams'), by stage, from its
        # stamps rather than from traces (`ingress.first_part_path`).
        path = httpx.get(f"{url}/v1/router/stats", timeout=30).json()["ingress"].get("first_part_path")
        report["under_streams"] = {"overhead": loaded, "breakdown": breakdown(probes), "first_part_path": path}
        print(json.dumps(report["under_streams"], indent=2), flush=True)
    for ingress in args.ingress:
        serve.delete(APP)
        url = deploy(config(ingress, args.replicas, tracing=False, throughput_mode=mode))
        asyncio.run(closed_loop(url, args.concurrency, 3))  # warm-up
        run = {"ingress_replicas": ingress, **asyncio.run(closed_loop(url, args.concurrency, args.seconds))}
        print(json.dumps(run), flush=True)
        report["capacity"].append(run)
    serve.shutdown()
    ray.shutdown()
    (args.out / "routing_capacity.json").write_text(json.dumps(report, indent=2))
    try:
        plot(report, args.out / "routing_capacity.png")
    except ImportError:  # no matplotlib (the GPU host's bundle): the JSON is the result
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
