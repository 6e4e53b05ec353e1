"""What one Ray Serve hop costs with nothing of ours on it: the floor under our request path's two hops.

One deployment calls another through a `DeploymentHandle` as our ingress calls an LLM replica: a unary
call with a ~4 KB argument (a prompt's request), timed from `.remote()` to the callee's method start
(`hop_to_replica` in our `first_part_path`); and an item yielded into a long-lived streaming call, timed
from the callee's `yield` to the caller's receipt (the first part's way back under `http.delivery: pull`).
Both sides run on one node, paced requests one at a time, Ray Serve's throughput-optimized data plane on or
off (`--throughput-mode`, as `http.ray_serve_throughput_optimized` sets it).

    python benchmarks/serve_hop.py --out benchmarks/results/routing_capacity/serve_hop_cpu.json

Compare with `routing_capacity.py`'s breakdown (our app with a stand-in engine) on the same machine.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

PAYLOAD_BYTES = 4096
PACE_S = 0.02


def build_app():
    from ray import serve

    @serve.deployment(max_ongoing_requests=1000)
    class Callee:
        async def call(self, payload: bytes, sent_at: float) -> float:
            return time.time() - sent_at

        async def stream(self, count: int):
            for _ in range(count):
                await asyncio.sleep(PACE_S)
                yield time.time()

    @serve.deployment
    class Caller:
        def __init__(self, callee):
            self._callee = callee

        async def unary(self, count: int) -> list[float]:
            payload, hops = b"x" * PAYLOAD_BYTES, []
            for _ in range(count):
                hops.append(await self._callee.call.remote(payload, time.time()))
                await asyncio.sleep(PACE_S)
            return hops

        async def streamed(self, count: int) -> list[float]:
            hops = []
            async for yielded_at in self._callee.options(stream=True).stream.remote(count):
                hops.append(time.time() - yielded_at)
            return hops

    return Caller.bind(Callee.bind())


def percentiles_ms(samples: list[float]) -> dict[str, float]:
    from serve_app.statistics import REPORTED_PERCENTILES, percentile, rounded_ms

    return {"n": len(samples), **rounded_ms({f"p{q}": percentile(samples, q) for q in REPORTED_PERCENTILES}, 3)}


async def measure(handle, count: int) -> dict[str, dict]:
    """In one event loop with the shutdown: in throughput-optimized mode the handle's router lives on the
    loop that first used it."""
    from ray import serve

    try:
        await handle.unary.remote(20)  # warm both sides' connections
        return {"unary_call_to_method_start": percentiles_ms(await handle.unary.remote(count)),
                "stream_item_yield_to_receipt": percentiles_ms(await handle.streamed.remote(count))}
    finally:
        await serve.shutdown_async()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--throughput-mode", choices=["on", "off"], default="on")
    args = parser.parse_args()
    if args.throughput_mode == "on":  # read when Ray starts, as `llmserve run` sets them
        os.environ.update({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"})
    import ray
    from ray import serve

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    try:
        handle = serve.run(build_app(), name="serve_hop", route_prefix=None)
        result = asyncio.run(measure(handle, args.requests))
    finally:
        ray.shutdown()
    report = {"command": " ".join([sys.executable, *sys.argv]), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "ray": ray.__version__, "throughput_mode": args.throughput_mode,
              "payload_bytes": PAYLOAD_BYTES, **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
