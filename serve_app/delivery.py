"""Response delivery from replicas to ingress replicas, batched across requests.

Ray Serve streams one object per yielded item, and at hundreds of concurrent requests the
per-item cost (not the GPU) caps throughput. So a replica sends each ingress replica *one*
call carrying every new chunk of every request bound there; while a call is in flight the next
batch accumulates, so batches grow exactly when the link is the bottleneck.
"""
from __future__ import annotations

import asyncio
import contextvars
import time
from collections import defaultdict, deque
from typing import Awaitable, Callable

from serve_app.generation import ResponsePart
from serve_app.statistics import percentile
from serve_app.telemetry.log_names import service_logger

logger = service_logger("delivery")

Batch = list[tuple[str, ResponsePart]]
# Sends a batch to an ingress replica; returns the request ids it no longer holds (their caller left).
SendBatch = Callable[[str, Batch], Awaitable[list[str] | None]]
# Told which requests nobody will read any more (caller gone, or its ingress replica dead).
Abandoned = Callable[[list[str]], None]


class _Link:
    """Send state for one destination; lives as long as the outbox."""

    def __init__(self) -> None:
        self.pending: Batch = []
        self.queued_seq = 0
        self.sent_seq = 0
        self.wakeup = asyncio.Event()
        self.progress = asyncio.Condition()
        self.sender: asyncio.Task | None = None


class Outbox:
    """Replica side: queues chunks per destination and sends them in batches, one call at a time."""

    def __init__(self, send: SendBatch, send_timeout_s: float = 30.0, on_abandoned: Abandoned | None = None,
                 clock: Callable[[], float] = time.monotonic, recent_calls: int = 256):
        self._send = send
        self._clock = clock
        # (seconds the call took, chunks it carried) of the last calls: a new request's first token waits
        # behind the call in flight, so under load this is part of its TTFT.
        self._recent: deque[tuple[float, int]] = deque(maxlen=recent_calls)
        self._on_abandoned = on_abandoned or (lambda request_ids: None)
        self._send_timeout_s = send_timeout_s
        self._links: dict[str, _Link] = defaultdict(_Link)
        self.batches_sent = 0
        self.chunks_sent = 0
        self.batches_failed = 0

    def put(self, destination: str, request_id: str, chunk: ResponsePart) -> int:
        """Queue a chunk; returns its sequence number for `wait_sent`."""
        link = self._links[destination]
        link.pending.append((request_id, chunk))
        link.queued_seq += 1
        if link.sender is None or link.sender.done():
            # A fresh context: the sender must not belong to the request that happened to start it,
            # or Ray Serve would cancel its calls when that request ends or is cancelled.
            link.sender = asyncio.create_task(self._send_loop(destination, link), context=contextvars.Context())
        link.wakeup.set()
        return link.queued_seq

    def recent_calls(self) -> dict[str, float | int | None]:
        """Over the last delivered calls (all destinations): how many, their duration p50 / p99 / max and
        chunks per call p50 / max."""
        durations = [seconds for seconds, _ in self._recent]
        sizes = [chunks for _, chunks in self._recent]
        return {"n": len(durations), "p50_s": percentile(durations, 50), "p99_s": percentile(durations, 99),
                "max_s": max(durations, default=None), "chunks_p50": percentile(sizes, 50),
                "chunks_max": max(sizes, default=None)}

    async def wait_sent(self, destination: str, seq: int) -> None:
        """Returns once chunk `seq` for `destination` was handed over (or dropped as undeliverable)."""
        link = self._links.get(destination)
        if link is None:
            return
        async with link.progress:
            await link.progress.wait_for(lambda: link.sent_seq >= seq)

    async def _send_loop(self, destination: str, link: _Link) -> None:
        while True:
            await link.wakeup.wait()
            link.wakeup.clear()
            batch, link.pending = link.pending, []
            if not batch:
                continue
            try:
                started = self._clock()
                unknown = await asyncio.wait_for(self._send(destination, batch), self._send_timeout_s)
                self._recent.append((self._clock() - started, len(batch)))
                self.batches_sent += 1
                self.chunks_sent += len(batch)
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
            async with link.progress:
                link.sent_seq += len(batch)
                link.progress.notify_all()


class Inbox:
    """Ingress side: one queue per open request, fed by `deliver`."""

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[ResponsePart]] = {}
        self.orphan_chunks = 0

    def open(self, request_id: str) -> asyncio.Queue[ResponsePart]:
        queue: asyncio.Queue[ResponsePart] = asyncio.Queue()
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
            queue.put_nowait(chunk)
        return list(unknown)

    def __len__(self) -> int:
        return len(self._queues)
