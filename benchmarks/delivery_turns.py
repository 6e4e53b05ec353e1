"""How long a response part waits in an LLM replica's own process before its delivery stream yields it.

Delivery by pull, replica side, pure asyncio (no Ray, no engine): `Outbox.put` -> its send loop ->
`Mailboxes.send` -> the ingress's stream (`Mailboxes.stream`) yielding the batch. Each `await` hand-over
is a turn of the event loop, and a replica's loop is shared with vLLM's output processing for every running
request: a turn on a busy loop waits behind everything else that is ready. The busy case has `--streams`
tasks waking every `--period-ms` for `--work-us` of work each (64 x 30 us / 5 ms keeps ~40% of the loop busy,
about what a replica's loop thread showed at 75% load on the H200).

    python benchmarks/delivery_turns.py --out benchmarks/results/routing_capacity/delivery_turns_cpu.json

Prints and writes put -> yield percentiles (us), idle and busy; run it at two commits to compare.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path

from autoscaling.bench.host import checkout_commit
from serve_app.delivery import Outbox
from serve_app.delivery_pull import Mailboxes
from serve_app.generation import ResponsePart
from serve_app.statistics import percentile

DESTINATION = "ingress"


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def _busy_stream(period_s: float, work_s: float) -> None:
    while True:
        _spin(work_s)
        await asyncio.sleep(period_s)


async def put_to_yield_s(parts: int, gap_s: float, streams: int, period_s: float, work_s: float) -> list[float]:
    mailboxes = Mailboxes(has_requests=lambda destination: True)
    outbox = Outbox(mailboxes.send)
    put_at: dict[str, float] = {}
    waits: list[float] = []

    async def read() -> None:
        async for batch in mailboxes.stream(DESTINATION):
            now = time.perf_counter()
            waits.extend(now - put_at[request_id] for request_id, _ in batch)

    reader = asyncio.create_task(read())
    load = [asyncio.create_task(_busy_stream(period_s, work_s)) for _ in range(streams)]
    await asyncio.sleep(0.1)
    for index in range(parts):
        request_id = f"request-{index}"
        put_at[request_id] = time.perf_counter()
        outbox.put(DESTINATION, request_id, ResponsePart(b"data: {}\n\n", generated_tokens=1))
        await asyncio.sleep(gap_s)
    await asyncio.sleep(0.05)
    for task in (reader, *load):
        task.cancel()
    await asyncio.gather(reader, *load, return_exceptions=True)
    return waits


def summary_us(waits: list[float]) -> dict[str, float]:
    return {"n": len(waits), **{f"p{q}_us": round(1e6 * percentile(waits, q), 1) for q in (50, 90, 99)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--parts", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--period-ms", type=float, default=5.0)
    parser.add_argument("--work-us", type=float, default=30.0)
    parser.add_argument("--label", default="", help="what the working tree holds (e.g. a change not committed yet)")
    args = parser.parse_args()
    gap_s = 0.0031  # not a multiple of the load's period
    cases = {"idle": (0, 0.0, 0.0), "busy": (args.streams, args.period_ms / 1e3, args.work_us / 1e6)}
    report = {"command": " ".join([sys.executable, *sys.argv]), "python": platform.python_version(),
              "commit": checkout_commit(), "label": args.label,
              "busy_load": {"streams": args.streams, "period_ms": args.period_ms, "work_us": args.work_us}}
    for name, (streams, period_s, work_s) in cases.items():
        runs = [summary_us(asyncio.run(put_to_yield_s(args.parts, gap_s, streams, period_s, work_s)))
                for _ in range(args.repeats)]
        report[name] = runs
        print(name, "  ".join(f"p50 {run['p50_us']} / p99 {run['p99_us']} us" for run in runs), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
