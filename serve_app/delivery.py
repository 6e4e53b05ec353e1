"""Response delivery from replicas to ingress replicas, batched across requests.

Ray Serve streams one object per yielded item, and at hundreds of concurrent requests the
per-item cost (not the GPU) caps throughput. So a replica sends each ingress replica *one*
call carrying every new chunk of every request bound there; while a call is in flight the next
batch accumulates, so batches grow exactly when the link is the bottleneck.

A response's first part (its status, and a stream's first token) does not wait behind that call:
while one is in flight, first parts go out in a call of their own (at most one such call at a time,
beside the batch). On an H200 under ~500 streams the batched calls took 20-30 ms at the median and
up to 200 ms, and a new request's first token waited for the call in flight and then rode in the
next, as large. The request's later parts wait until its first part is handed over, so every
request's parts still arrive in order.
"""
from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import time
from collections import defaultdict, deque
from typing import Any, Awaitable, Callable, Coroutine

from serve_app.generation import ResponsePart
from serve_app.statistics import percentile
from serve_app.telemetry.log_names import service_logger

logger = service_logger("delivery")

Batch = list[tuple[str, ResponsePart]]
# Sends a batch to an ingress replica; returns the request ids it no longer holds (their caller left).
SendBatch = Callable[[str, Batch], Awaitable[list[str] | None]]
# Told which requests nobody will read any more (caller gone, or its ingress replica dead).
Abandoned = Callable[[list[str]], None]


_Entry = tuple[int, str, ResponsePart]  # (sequence number, request id, part)


class _Link:
    """Send state for one destination; lives as long as the outbox."""

    def __init__(self) -> None:
        self.pending: list[_Entry] = []
        self.first_parts: list[_Entry] = []  # first parts queued while a batch call is in flight
        self.held: set[str] = set()  # requests whose first part is in `first_parts` or its call
        self.calls_first_seq: dict[str, int] = {}  # per call in flight (one per lane), its first part's seq
        self.queued_seq = 0
        self.sent_seq = 0  # every part up to this one is handed over (or dropped)
        self.batch_in_flight = False
        self.wakeup = asyncio.Event()
        self.first_parts_wakeup = asyncio.Event()
        self.progress = asyncio.Condition()
        self.sender: asyncio.Task | None = None
        self.first_parts_sender: asyncio.Task | None = None


def detached_task(coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task:
    """A task in a fresh context: work that outlives the request whose call happened to start it (Ray Serve
    cancels a request's calls, and the tasks of its context, when that request ends or is cancelled)."""
    return asyncio.create_task(coroutine, context=contextvars.Context())


class Outbox:
    """Replica side: queues chunks per destination and sends them in batches, one call at a time, and
    responses' first parts beside a batch call in flight (`first_parts_own_call`)."""

    def __init__(self, send: SendBatch, send_timeout_s: float = 30.0, on_abandoned: Abandoned | None = None,
                 clock: Callable[[], float] = time.monotonic, recent_calls: int = 256,
                 first_parts_own_call: bool = True):
        self._send = send
        self._clock = clock
        # (seconds the call took, chunks it carried) of the last calls: a new request's first token waits
        # behind the call in flight, so under load this is part of its TTFT.
        self._recent: deque[tuple[float, int]] = deque(maxlen=recent_calls)
        self._on_abandoned = on_abandoned or (lambda request_ids: None)
        self._send_timeout_s = send_timeout_s
        self._first_parts_own_call = first_parts_own_call
        self._links: dict[str, _Link] = defaultdict(_Link)
        self.batches_sent = 0
        self.chunks_sent = 0
        self.batches_failed = 0
        self.first_part_calls = 0  # calls that carried only first parts, beside a batch in flight

    def put(self, destination: str, request_id: str, chunk: ResponsePart) -> int:
        """Queue a chunk; returns its sequence number for `wait_sent`."""
        link = self._links[destination]
        link.queued_seq += 1
        entry = (link.queued_seq, request_id, chunk)
        if self._first_parts_own_call and chunk.status is not None and link.batch_in_flight:
            link.first_parts.append(entry)
            link.held.add(request_id)
            link.first_parts_sender = self._running(link.first_parts_sender,
                                                    lambda: self._first_parts_loop(destination, link))
            link.first_parts_wakeup.set()
        else:
            link.pending.append(entry)
            link.sender = self._running(link.sender, lambda: self._send_loop(destination, link))
            link.wakeup.set()
        return link.queued_seq

    @staticmethod
    def _running(task: asyncio.Task | None, loop: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task:
        if task is not None and not task.done():
            return task
        return detached_task(loop())  # the sender serves every request to its destination

    def recent_calls(self) -> dict[str, float | int | None]:
        """Over the last delivered calls (all destinations): how many, their duration p50 / p99 / max and
        chunks per call p50 / max."""
        durations = [seconds for seconds, _ in self._recent]
        sizes = [chunks for _, chunks in self._recent]
        return {"n": len(durations), "p50_s": percentile(durations, 50), "p99_s": percentile(durations, 99),
                "max_s": max(durations, default=None), "chunks_p50": percentile(sizes, 50),
                "chunks_max": max(sizes, default=None), "first_part_calls": self.first_part_calls}

    async def wait_sent(self, destination: str, seq: int) -> None:
        """Returns once chunk `seq` for `destination`, and every chunk queued there before it, was handed
        over (or dropped as undeliverable)."""
        link = self._links.get(destination)
        if link is None:
            return
        async with link.progress:
            await link.progress.wait_for(lambda: link.sent_seq >= seq)

    async def _send_loop(self, destination: str, link: _Link) -> None:
        while True:
            await link.wakeup.wait()
            link.wakeup.clear()
            # A request whose first part is still on its way waits with the rest of its parts.
            batch = [entry for entry in link.pending if entry[1] not in link.held]
            if not batch:
                continue
            link.pending = [entry for entry in link.pending if entry[1] in link.held]
            link.batch_in_flight = True
            try:
                await self._deliver(destination, link, "batch", batch)
            finally:
                link.batch_in_flight = False

    async def _first_parts_loop(self, destination: str, link: _Link) -> None:
        while True:
            await link.first_parts_wakeup.wait()
            link.first_parts_wakeup.clear()
            batch, link.first_parts = link.first_parts, []
            if not batch:
                continue
            if await self._deliver(destination, link, "first_parts", batch):
                self.first_part_calls += 1
            link.held.difference_update(request_id for _, request_id, _ in batch)
            if link.pending:
                link.wakeup.set()

    async def _deliver(self, destination: str, link: _Link, lane: str, entries: list[_Entry]) -> bool:
        """Hand `entries` over in one call; False when the call failed (its requests are abandoned)."""
        batch: Batch = [(request_id, chunk) for _, request_id, chunk in entries]
        delivered = False
        link.calls_first_seq[lane] = entries[0][0]
        try:
            started = self._clock()
            # Awaited in this task (`asyncio.timeout`, not `wait_for`'s task of its own): a response's first
            # part leaves in fewer turns of a replica loop that is busy with the engine's outputs.
            async with asyncio.timeout(self._send_timeout_s):
                unknown = await self._send(destination, batch)
            self._recent.append((self._clock() - started, len(batch)))
            self.batches_sent += 1
            self.chunks_sent += len(batch)
            delivered = True
            if unknown:
                self._on_abandoned(list(unknown))
        except (Exception, asyncio.CancelledError) as error:
            # The ingress replica is gone (its clients with it) or the call was cancelled under us;
            # either way the batch cannot be delivered, and the loop must live on for the others.
            if isinstance(error, asyncio.CancelledError) and asyncio.current_task().cancelling():
                raise
            self.batches_failed += 1
            logger.warning("dropped %d chunks for %s: %s", len(batch), destination, type(error).__name__)
            self._on_abandoned(list(dict.fromkeys(request_id for request_id, _ in batch)))
        del link.calls_first_seq[lane]
        async with link.progress:
            link.sent_seq = self._first_unsent(link) - 1
            link.progress.notify_all()
        return delivered

    @staticmethod
    def _first_unsent(link: _Link) -> int:
        """The lowest sequence number not yet handed over: each queue and each call in flight holds its
        parts in the order they were queued, so it is the least of their first ones."""
        firsts = [*link.calls_first_seq.values(), *(queue[0][0] for queue in (link.pending, link.first_parts) if queue)]
        return min(firsts, default=link.queued_seq + 1)


class PartQueue(asyncio.Queue):
    """One response's parts at the ingress. `next_or_none_after` wakes its reader one loop turn after a part
    comes (or the other awaited thing ends), where a `get()` task raced in `asyncio.wait` took two."""

    def __init__(self) -> None:
        super().__init__()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: ResponsePart) -> None:
        super().put_nowait(item)
        self._wake()

    def _wake(self, _: object = None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next_or_none_after(self, other: asyncio.Future) -> ResponsePart | None:
        """The next part; None once `other` is done with no part queued."""
        if self.empty() and not other.done():
            self._waiter = asyncio.get_running_loop().create_future()
            other.add_done_callback(self._wake)
            try:
                await self._waiter
            finally:
                self._waiter = None
                other.remove_done_callback(self._wake)
        return self.get_nowait() if not self.empty() else None


class Inbox:
    """Ingress side: one queue per open request, fed by `deliver`, which stamps a response's first part
    with its arrival (`FirstPartStamps.delivered`, wall clock)."""

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self._queues: dict[str, PartQueue] = {}
        self._wall_clock = wall_clock
        self.orphan_chunks = 0

    def open(self, request_id: str) -> PartQueue:
        queue = PartQueue()
        self._queues[request_id] = queue
        return queue

    def close(self, request_id: str) -> None:
        self._queues.pop(request_id, None)

    def deliver(self, batch: Batch) -> list[str]:
        """Queue each chunk for its request; returns the ids of requests nobody here reads any more."""
        unknown: dict[str, None] = {}
        for request_id, chunk in batch:
            queue = self._queues.get(request_id)
            if queue is None:
                # The client left, or the router that dispatched it died and the ingress gave up on it.
                self.orphan_chunks += 1
                unknown[request_id] = None
                continue
            if chunk.stamps is not None:
                chunk.stamps = dataclasses.replace(chunk.stamps, delivered=self._wall_clock())
            queue.put_nowait(chunk)
        return list(unknown)

    def __len__(self) -> int:
        return len(self._queues)
