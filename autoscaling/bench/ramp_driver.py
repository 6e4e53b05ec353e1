"""The GPU ramp's I/O: an open-loop run that hands every request to a callback as it ends, beside a
sampler that reads the replica count and the router's queue every second, both on one clock, so a
call killed mid-run leaves everything that had finished on disk."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from autoscaling.loadtest.client import ClientOptions, new_http_client, send
from autoscaling.loadtest.metrics import RequestRecord
from autoscaling.loadtest.workload import PlannedRequest


async def drive(planned: Sequence[PlannedRequest], options: ClientOptions,
                on_record: Callable[[PlannedRequest, RequestRecord], None],
                sample: Callable[[], dict[str, Any]], on_sample: Callable[[dict[str, Any]], None], *,
                poll_s: float = 1.0, tail_timeout_s: float = 60.0) -> list[PlannedRequest]:
    """Send each planned request at its offset (latencies count from the send, as `vllm bench serve`);
    `sample()` (blocking, run in a thread) every `poll_s` until the last request ends, its result stamped
    `t_s`. Requests still open `tail_timeout_s` after the last send are cancelled and returned."""
    zero = time.perf_counter()
    done = asyncio.Event()

    async def sampler() -> None:
        while not done.is_set():
            t = time.perf_counter() - zero
            on_sample({"t_s": round(t, 2), **await asyncio.to_thread(sample)})
            try:
                await asyncio.wait_for(done.wait(), timeout=max(0.0, poll_s - (time.perf_counter() - zero - t)))
            except TimeoutError:
                pass

    async def one(http, request: PlannedRequest) -> None:
        on_record(request, await send(http, options, request, zero))

    sampling = asyncio.create_task(sampler())
    tasks: dict[asyncio.Task, PlannedRequest] = {}
    async with new_http_client(options.timeout_s) as http:
        try:
            for request in planned:
                delay = zero + request.send_offset_s - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks[asyncio.create_task(one(http, request))] = request
            _, still_open = await asyncio.wait(tasks, timeout=tail_timeout_s) if tasks else (set(), set())
        finally:
            for task in tasks:
                task.cancel()
            done.set()
            await sampling
    return [tasks[task] for task in still_open]
