"""The GPU ramp's I/O: an open-loop run (or a closed-loop one, for saturation) that hands every request
to a callback as it ends, beside a sampler that reads the replica count and the router's queue every
second, both on one clock, so a call killed mid-run leaves everything that had finished on disk."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from autoscaling.loadtest.client import ClientOptions, new_http_client, send
from autoscaling.loadtest.metrics import RequestRecord
from autoscaling.loadtest.workload import PlannedRequest

OnRecord = Callable[[PlannedRequest, RequestRecord], None]


async def _sample_until(done: asyncio.Event, zero: float, sample: Callable[[], dict[str, Any]],
                        on_sample: Callable[[dict[str, Any]], None], poll_s: float) -> None:
    """`sample()` (blocking, run in a thread) every `poll_s` until `done`, its result stamped `t_s`."""
    while not done.is_set():
        t = time.perf_counter() - zero
        on_sample({"t_s": round(t, 2), **await asyncio.to_thread(sample)})
        try:
            await asyncio.wait_for(done.wait(), timeout=max(0.0, poll_s - (time.perf_counter() - zero - t)))
        except TimeoutError:
            pass


async def drive(planned: Sequence[PlannedRequest], options: ClientOptions, on_record: OnRecord,
                sample: Callable[[], dict[str, Any]], on_sample: Callable[[dict[str, Any]], None], *,
                poll_s: float = 1.0, tail_timeout_s: float = 60.0) -> list[PlannedRequest]:
    """Send each planned request at its offset (latencies count from the send, as `vllm bench serve`);
    sample every `poll_s` until the last request ends. Requests still open `tail_timeout_s` after the
    last send are cancelled and returned."""
    zero = time.perf_counter()
    done = asyncio.Event()

    async def one(http, request: PlannedRequest) -> None:
        on_record(request, await send(http, options, request, zero))

    sampling = asyncio.create_task(_sample_until(done, zero, sample, on_sample, poll_s))
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


async def drive_closed(requests: Iterable[PlannedRequest], concurrency: int, duration_s: float,
                       options: ClientOptions, on_record: OnRecord, sample: Callable[[], dict[str, Any]],
                       on_sample: Callable[[dict[str, Any]], None], *, poll_s: float = 1.0,
                       tail_timeout_s: float = 60.0) -> int:
    """`concurrency` clients, each sending the next request as soon as its last one ended, for
    `duration_s` (no send after it), sampling every `poll_s`; requests still open `tail_timeout_s` after
    that are cancelled. Returns how many were cancelled."""
    if concurrency < 1 or duration_s <= 0:
        raise ValueError(f"need concurrency >= 1 and duration_s > 0, got {concurrency}, {duration_s}")
    zero = time.perf_counter()
    done = asyncio.Event()
    pending = iter(requests)

    async def client(http) -> None:
        while time.perf_counter() - zero < duration_s and (request := next(pending, None)) is not None:
            on_record(request, await send(http, options, request, zero))

    sampling = asyncio.create_task(_sample_until(done, zero, sample, on_sample, poll_s))
    async with new_http_client(options.timeout_s) as http:
        clients = [asyncio.create_task(client(http)) for _ in range(concurrency)]
        try:
            _, still_open = await asyncio.wait(clients, timeout=duration_s + tail_timeout_s)
        finally:
            for task in clients:
                task.cancel()
            done.set()
            await sampling
    return len(still_open)
