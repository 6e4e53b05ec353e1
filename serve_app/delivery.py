"""Token delivery from replicas to ingress replicas, batched across requests.

Ray Serve streams one object per yielded item, and at hundreds of concurrent requests the
per-item cost (not the GPU) caps throughput. So a replica sends each ingress replica *one*
call carrying every new chunk of every request bound there; while a call is in flight the next
batch accumulates, so batches grow exactly when the link is the bottleneck.
"""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Awaitable, Callable

from serve_app.generation import GenerationChunk

logger = logging.getLogger("serve_app.delivery")

Batch = list[tuple[str, GenerationChunk]]
SendBatch = Callable[[str, Batch], Awaitable[None]]


class Outbox:
    """Replica side: queues chunks per destination and sends them in batches, one call at a time."""

    def __init__(self, send: SendBatch, send_timeout_s: float = 30.0):
        self._send = send
        self._send_timeout_s = send_timeout_s
        self._pending: dict[str, Batch] = defaultdict(list)
        self._queued_seq: dict[str, int] = defaultdict(int)
        self._sent_seq: dict[str, int] = defaultdict(int)
        self._wakeups: dict[str, asyncio.Event] = {}
        self._progress: dict[str, asyncio.Condition] = {}
        self._senders: dict[str, asyncio.Task] = {}
        self.batches_sent = 0
        self.chunks_sent = 0
        self.batches_failed = 0

    def put(self, destination: str, request_id: str, chunk: GenerationChunk) -> int:
        """Queue a chunk; returns its sequence number for `wait_sent`."""
        self._pending[destination].append((request_id, chunk))
        self._queued_seq[destination] += 1
        if destination not in self._senders or self._senders[destination].done():
            self._wakeups[destination] = asyncio.Event()
            self._progress[destination] = asyncio.Condition()
            self._senders[destination] = asyncio.create_task(self._sender(destination))
        self._wakeups[destination].set()
        return self._queued_seq[destination]

    async def wait_sent(self, destination: str, seq: int) -> None:
        """Returns once chunk `seq` for `destination` was handed over (or dropped as undeliverable)."""
        progress = self._progress.get(destination)
        if progress is None:
            return
        async with progress:
            await progress.wait_for(lambda: self._sent_seq[destination] >= seq)

    async def _sender(self, destination: str) -> None:
        wakeup = self._wakeups[destination]
        while True:
            await wakeup.wait()
            wakeup.clear()
            batch = self._pending.pop(destination, [])
            if not batch:
                continue
            try:
                await asyncio.wait_for(self._send(destination, batch), self._send_timeout_s)
                self.batches_sent += 1
                self.chunks_sent += len(batch)
            except Exception as error:  # the ingress replica is gone: its clients are gone too
                self.batches_failed += 1
                logger.warning("dropped %d chunks for %s: %s", len(batch), destination, type(error).__name__)
            async with self._progress[destination]:
                self._sent_seq[destination] += len(batch)
                self._progress[destination].notify_all()


class Inbox:
    """Ingress side: one queue per open request, fed by `deliver`."""

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[GenerationChunk]] = {}
        self.orphan_chunks = 0

    def open(self, request_id: str) -> asyncio.Queue[GenerationChunk]:
        queue: asyncio.Queue[GenerationChunk] = asyncio.Queue()
        self._queues[request_id] = queue
        return queue

    def close(self, request_id: str) -> None:
        self._queues.pop(request_id, None)

    def deliver(self, batch: Batch) -> None:
        for request_id, chunk in batch:
            queue = self._queues.get(request_id)
            if queue is None:
                # The client left (or a re-routed attempt's stale replica): nobody reads it.
                self.orphan_chunks += 1
                continue
            queue.put_nowait(chunk)

    def __len__(self) -> int:
        return len(self._queues)
