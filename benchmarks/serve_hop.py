"""What one Ray Serve hop costs with nothing of ours on it: the floor under our request path's two hops.

One deployment calls another through a `DeploymentHandle` as our ingress calls an LLM replica: a unary
call with a ~4 KB argument (a prompt's request), timed from `.remote()` to the callee's method start
(`hop_to_replica` in our `first_part_path`); and an item yielded into a long-lived streaming call, timed
from the callee's `yield` to the caller's receipt (the first part's way back under `http.delivery: pull`).
Both sides run on one node, paced requests one at a time, Ray Serve's throughput-optimized data plane on or
off (`--throughput-mode`, as `http.ray_serve_throughput_optimized` sets it).

Beside them, the same two measurements over a plain TCP connection between the same two replicas (asyncio
streams, framed as direct delivery frames them: `serve_app.direct_link`'s `encode_frame` / `read_frame`; the
callee's server on its node's address; `direct_*`): what a request path that keeps Ray for placement,
discovery and failure but not for each call's bytes pays.

    python benchmarks/serve_hop.py --out benchmarks/results/routing_capacity/serve_hop_cpu.json

Compare with `routing_capacity.py`'s breakdown (our app with a stand-in engine) on the same machine.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
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
        def __init__(self):
            self._server = None

        async def call(self, payload: bytes, sent_at: float) -> float:
            return time.time() - sent_at

        async def direct_address(self) -> tuple[str, int]:
            """Starts the TCP server on first use (in the replica's own loop) and returns its address."""
            if self._server is None:
                import ray
                self._server = await asyncio.start_server(self._serve_connection, ray.util.get_node_ip_address(), 0)
            return self._server.sockets[0].getsockname()[:2]

        async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            from serve_app.direct_link import encode_frame, read_frame

            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:
                    kind, _, (value, sent_at) = await read_frame(reader)
                    if kind == "call":
                        writer.write(encode_frame("hop", 0, time.time() - sent_at))
                    else:  # "stream": `value` items, each stamped as it is written
                        for _ in range(value):
                            await asyncio.sleep(PACE_S)
                            writer.write(encode_frame("item", 0, time.time()))
                            await writer.drain()
                    await writer.drain()

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

        async def direct(self, count: int) -> dict[str, list[float]]:
            """The two measurements over one TCP connection to the callee."""
            from serve_app.direct_link import encode_frame, read_frame

            host, port = await self._callee.direct_address.remote()
            reader, writer = await asyncio.open_connection(host, port)
            try:
                payload, calls = b"x" * PAYLOAD_BYTES, []
                for _ in range(count):
                    writer.write(encode_frame("call", 0, (payload, time.time())))
                    await writer.drain()
                    _, _, hop = await read_frame(reader)
                    calls.append(hop)
                    await asyncio.sleep(PACE_S)
                writer.write(encode_frame("stream", 0, (count, time.time())))
                await writer.drain()
                items = []
                for _ in range(count):
                    _, _, written_at = await read_frame(reader)
                    items.append(time.time() - written_at)
                return {"calls": calls, "items": items}
            finally:
                writer.close()

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
        await handle.direct.remote(20)
        result = {"unary_call_to_method_start": percentiles_ms(await handle.unary.remote(count)),
                  "stream_item_yield_to_receipt": percentiles_ms(await handle.streamed.remote(count))}
        direct = await handle.direct.remote(count)
        return {**result, "direct_call_to_handler": percentiles_ms(direct["calls"]),
                "direct_item_write_to_receipt": percentiles_ms(direct["items"])}
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
