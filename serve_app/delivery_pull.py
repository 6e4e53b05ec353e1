"""Delivery by pull (`http.delivery: pull`): each ingress replica holds a stream open to every LLM replica
it has requests on, and the replica writes its batches of response parts into it.

Why: with delivery by push a replica calls the ingress replica holding a request (`deliver`), which needs
a request router on the ingress deployment that addresses a call to one replica, and Ray Serve's HAProxy
mode (the multi-node front without its Python proxy) refuses any custom router on the ingress deployment.
A call from the ingress to an LLM replica is addressed by the LLM replicas' router, which HAProxy mode
leaves alone. The stream is one long call, not a poll per batch: a replica being drained (downscaling)
takes no new calls but keeps the ones open, so its last requests' tokens still reach their clients.

The replica's `Outbox` is unchanged (batches across requests, first parts beside a batch, `wait_sent`,
timeouts): its `send` is `Mailboxes.send`, which parks the batch for the stream and returns once the stream
has handed it on. The pieces here are pure asyncio; `serve_app.deployments.collect_link` wires them to Ray.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any

from serve_app.delivery import Batch, detached_task
from serve_app.telemetry.log_names import service_logger

logger = service_logger("delivery")

# A stream with nothing to carry for this long ends (the ingress opens a new one with its next request):
# an open stream is an ongoing call, and a replica being drained waits for its ongoing calls.
IDLE_CLOSE_S = 5.0
# After a stream breaks (the call was cut), parts wait this long for the ingress to open another before
# their requests are taken as abandoned.
RECONNECT_GRACE_S = 2.0
# Ray Serve does not end a stream whose caller died: the replica would go on generating into it. An ingress
# replica says it is alive to each replica it streams from this often (`Collector`), and one not heard
# from for SILENCE_S is taken as gone. Six heartbeats fit in it: an ingress's loop lagged up to 0.4 s under
# the H200 flood, and on 2 busy CI cores 1.5 s of silence was seen from a live ingress. (Delivery by push
# learns of a dead ingress at the next delivery call, at once.)
HEARTBEAT_S = 0.5
SILENCE_S = 3.0
CHECK_S = 0.25  # how often waiting parts and idle streams look for a gone ingress
# A mailbox with no stream, nothing parked, no request here for its ingress and no word from it for this
# long is dropped: ingress replicas come and go (autoscaling, restarts) while an LLM replica lives on.
FORGET_AFTER_S = 60.0


class IngressGone(ConnectionError):
    """No stream from the destination ingress replica: its requests' parts cannot be delivered."""


class _Mailbox:
    def __init__(self) -> None:
        self.parked: list[tuple[Batch, asyncio.Future[None]]] = []
        self.wakeup = asyncio.Event()
        self.reader: object | None = None
        self.reading = asyncio.Event()  # set while a stream is open
        self.broken_at: float | None = None  # when its last stream broke, while no other is open
        self.heard_at = 0.0  # the ingress's last heartbeat (or stream opening)
        self.silenced = False  # its stream ended because the ingress fell silent: gone until it opens another


class Mailboxes:
    """Replica side: per ingress replica, the batches waiting for its stream (`stream`)."""

    def __init__(self, has_requests: Callable[[str], bool], idle_close_s: float = IDLE_CLOSE_S,
                 reconnect_grace_s: float = RECONNECT_GRACE_S, silence_s: float | None = SILENCE_S,
                 clock: Callable[[], float] = time.monotonic):
        """`silence_s`: an ingress replica not heard from (`heard_from`) for this long is gone; None: never."""
        self._has_requests = has_requests
        self._idle_close_s = idle_close_s
        self._reconnect_grace_s = reconnect_grace_s
        self._silence_s = silence_s
        self._clock = clock
        self._boxes: dict[str, _Mailbox] = defaultdict(_Mailbox)
        self._checked_at = clock()
        self._pruned_at = clock()
        self.streams_opened = 0
        self.streams_broken = 0

    async def send(self, destination: str, batch: Batch) -> None:
        """Returns once `destination`'s stream has handed `batch` on; raises `IngressGone` if its stream broke
        and none came back within the grace (the caller's timeout covers a destination that never opened one)."""
        box = self._boxes[destination]
        self._fail_if_gone(box)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        item = (batch, future)
        box.parked.append(item)
        box.wakeup.set()
        try:
            while not future.done():
                await asyncio.wait({future}, timeout=CHECK_S)
                if not future.done():
                    self._fail_if_gone(box)
            future.result()
        finally:
            if not future.done():  # timed out or cancelled: the batch must not go out later
                with contextlib.suppress(ValueError):
                    box.parked.remove(item)

    async def stream_opens(self, destination: str, within_s: float) -> bool:
        """Whether `destination` holds a stream open here, or opens one within `within_s`."""
        box = self._boxes[destination]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                await box.reading.wait()
        return box.reader is not None

    def heard_from(self, destination: str) -> None:
        """Ingress replica `destination` is alive (its heartbeat)."""
        self._boxes[destination].heard_at = self._clock()

    def _gone(self, box: _Mailbox) -> bool:
        now = self._clock()
        stalled_s = now - self._checked_at - 2 * CHECK_S
        if stalled_s > 0:
            # This process did not look for a while (its loop stalled, or the machine did): heartbeats may be
            # waiting to be read, so that time is not the ingress's silence (a live ingress was taken as gone).
            for other in self._boxes.values():
                other.heard_at += stalled_s
        self._checked_at = now
        if now - self._pruned_at >= FORGET_AFTER_S / 2:
            self._forget_idle_boxes(now)
        if box.reader is None:
            return box.silenced or (box.broken_at is not None and now - box.broken_at >= self._reconnect_grace_s)
        return self._silence_s is not None and now - box.heard_at >= self._silence_s

    def _forget_idle_boxes(self, now: float) -> None:
        self._pruned_at = now
        idle = [destination for destination, box in self._boxes.items()
                if box.reader is None and not box.parked
                and now - max(box.heard_at, box.broken_at or 0.0) >= FORGET_AFTER_S
                and not self._has_requests(destination)]
        for destination in idle:
            del self._boxes[destination]

    @property
    def destinations(self) -> int:
        """Ingress replicas with a mailbox here (open streams, parked parts, or heard from lately)."""
        return len(self._boxes)

    def _fail_if_gone(self, box: _Mailbox) -> None:
        if self._gone(box):
            raise IngressGone("the ingress replica is gone (its stream broke, or it fell silent)")

    async def stream(self, destination: str, wake_every_s: float = CHECK_S) -> AsyncIterator[Batch]:
        """The batches for `destination`, each the parts parked since the last (in the order parked); ends
        when idle for `idle_close_s` with no request for it running here, when a newer stream replaces it,
        or (as broken) when the ingress falls silent."""
        box = self._boxes[destination]
        token = object()
        box.reader, box.broken_at, box.silenced, box.heard_at = token, None, False, self._clock()
        box.reading.set()
        box.wakeup.set()  # an older stream wakes, sees it is replaced, and ends
        self.streams_opened += 1
        taken: list[tuple[Batch, asyncio.Future[None]]] = []
        finished = False
        busy_at = self._clock()
        try:
            while box.reader is token:
                if taken:
                    for _, future in taken:
                        if not future.done():
                            future.set_result(None)
                    taken = []
                if self._gone(box):  # the ingress died with its stream open: nothing reads it
                    box.silenced = True
                    return
                if not box.parked:
                    now = self._clock()
                    if self._has_requests(destination):
                        busy_at = now
                    elif now - busy_at >= self._idle_close_s:
                        finished = True
                        return
                    box.wakeup.clear()
                    # The wake-up in this task (no `wait_for` task): parked parts go out a loop turn sooner.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wake_every_s):
                            await box.wakeup.wait()
                    continue
                taken, box.parked = box.parked, []
                busy_at = self._clock()
                yield [part for batch, _ in taken for part in batch]
            finished = True  # replaced
        finally:
            if box.reader is token:
                box.reader = None
                box.reading.clear()
                if not finished:
                    self.streams_broken += 1
                    box.broken_at = self._clock()
                    logger.warning("stream to ingress %s %s with %d parts waiting", destination,
                                   "fell silent" if box.silenced else "broke", len(box.parked))
            for _, future in taken:  # handed to a stream that broke before asking for more: maybe lost
                if not future.done():
                    future.set_exception(IngressGone("the stream broke while carrying this batch"))


OpenStream = Callable[[str], AsyncIterator[Batch]]
Forget = Callable[[str, list[str]], Awaitable[None]]


class Collector:
    """Ingress side: one stream per LLM replica this ingress replica has requests on (`running_on`), each
    batch handed to `deliver` (the inbox); the ids it no longer reads go back to that replica (`forget`)."""

    def __init__(self, open_stream: OpenStream, deliver: Callable[[Batch], list[str]], forget: Forget,
                 retry_s: float = 0.2, heartbeat_s: float = HEARTBEAT_S):
        """`forget(replica, ids)` also says this ingress is alive: with no ids it is the heartbeat."""
        self._heartbeat_s = heartbeat_s
        self._heartbeats: asyncio.Task | None = None
        self._open_stream = open_stream
        self._deliver = deliver
        self._forget = forget
        self._retry_s = retry_s
        self._running: dict[str, int] = defaultdict(int)
        self._followers: dict[str, asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()
        self.streams_opened = 0
        self.stream_failures = 0
        self.batches = 0

    @contextlib.contextmanager
    def running_on(self, replica_id: str) -> Iterator[None]:
        """Around a request's call to `replica_id`: its stream is open (or opening) while the call runs."""
        self._running[replica_id] += 1
        if self._heartbeats is None or self._heartbeats.done():
            self._heartbeats = self._spawn(self._heartbeat_forever())
        follower = self._followers.get(replica_id)
        if follower is None or follower.done():
            self._followers[replica_id] = self._spawn(self._follow(replica_id))
        try:
            yield
        finally:
            self._running[replica_id] -= 1
            if self._running[replica_id] <= 0:
                del self._running[replica_id]

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task:
        task = detached_task(coroutine)  # the stream serves every request of its replica, not the one that opened it
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _follow(self, replica_id: str) -> None:
        while True:
            try:
                self.streams_opened += 1
                async for batch in self._open_stream(replica_id):
                    self.batches += 1
                    unknown = self._deliver(batch)
                    if unknown:
                        self._spawn(self._forget_quietly(replica_id, unknown))
            except Exception as error:  # the replica died or the call was cut: its runs fail on their own
                self.stream_failures += 1
                logger.warning("stream from %s broke: %s", replica_id, type(error).__name__)
                if self._running.get(replica_id, 0) > 0:
                    await asyncio.sleep(self._retry_s)
            # Ended by the replica (idle) or broken: gone unless requests still run there. No await between
            # this check and the removal, so `running_on` sees either a live follower or none.
            if self._running.get(replica_id, 0) <= 0:
                if self._followers.get(replica_id) is asyncio.current_task():
                    del self._followers[replica_id]
                return
            await asyncio.sleep(0)  # a stream that ends at once must not starve the loop

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            streaming = [replica_id for replica_id, task in self._followers.items() if not task.done()]
            # Not awaited one by one: a slow replica must not hold up the others' heartbeats.
            for replica_id in streaming:
                self._spawn(self._forget_quietly(replica_id, []))

    async def _forget_quietly(self, replica_id: str, request_ids: list[str]) -> None:
        try:
            await self._forget(replica_id, request_ids)
        except Exception as error:  # a replica that cannot be told finishes those requests unread
            logger.debug("could not tell %s to abort %d requests: %s", replica_id, len(request_ids),
                         type(error).__name__)

    def stats(self) -> dict[str, int]:
        return {"streams_open": sum(not task.done() for task in self._followers.values()),
                "streams_opened": self.streams_opened, "stream_failures": self.stream_failures,
                "batches": self.batches}

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
