"""A generation request's response as the ingress reads it: dispatched through the router (again, on a
replica lost before the first token), its parts as replicas deliver them (`serve_app.delivery`), written
out in as few writes as the client's pace allows, and a stream that fails ended with an error event."""
from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import AsyncIterator, Awaitable, Callable, Mapping

from serve_app.delivery import Inbox, detached_task
from serve_app.deployments.door import LocalDoor
from serve_app.deployments.errors import ReplicaFailed
from serve_app.generation import FirstPartStamps, GenerationRequest, ResponsePart, RunSummary, merge_parts
from serve_app.http.errors import describe_failure, refusal_error, stream_error_event
from serve_app.policy.router_core import Refusal
from serve_app.policy.stream_pacing import StreamPacing, next_write_wait_s
from serve_app.telemetry.log_names import service_logger
from serve_app.telemetry.tracing import RequestSpan

logger = service_logger("ingress")
MAX_DISPATCH_ATTEMPTS = 3
# Delivery by pull: how long a response's last parts may trail its dispatch call's return (they come on the
# replica's stream, already sent; only a broken stream loses them, and then this is the wait for the error).
PARTS_AFTER_DISPATCH_S = 10.0
Submit = Callable[[GenerationRequest], Awaitable[RunSummary | Refusal]]


async def _part_within(queue: asyncio.Queue, wait_s: float) -> ResponsePart | None:
    try:
        async with asyncio.timeout(wait_s):
            return await queue.get()
    except TimeoutError:
        return None


def _returned_a_summary(dispatched: asyncio.Future) -> bool:
    return dispatched.done() and not dispatched.cancelled() and dispatched.exception() is None \
        and not isinstance(dispatched.result(), Refusal)


def _consume_outcome(future: asyncio.Future) -> None:
    """Retrieve a cancelled call's outcome so asyncio does not log it as unhandled."""
    if not future.cancelled():
        future.exception()


def _drain(queue: asyncio.Queue) -> list[ResponsePart]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def _held(queue: asyncio.Queue, first: ResponsePart, wait_s: float) -> ResponsePart:
    """`first` and the parts that follow it within `wait_s`, as one; returns early at a done part."""
    held = [first]
    try:
        async with asyncio.timeout(wait_s):
            while not held[-1].done:
                held.append(await queue.get())
    except TimeoutError:
        pass
    return merge_parts(*held)


def _error_part(message: str) -> ResponsePart:
    return ResponsePart(b"", done=True, error=message)


class ResponseParts:
    def __init__(self, inbox: Inbox, submit: Submit, door: LocalDoor, coalesce_s: Mapping[str, float],
                 on_first_token: Callable[[RequestSpan, float], None], pacing: StreamPacing = StreamPacing(None),
                 tpot_slo_s: Mapping[str, float] | None = None,
                 on_first_part: Callable[[str, FirstPartStamps, float], None] = lambda name, stamps, written: None,
                 on_prefilled: Callable[[str], None] = lambda request_id: None):
        """`coalesce_s`: per class, the least time between two writes of a stream whatever the load;
        `pacing` (with each class's `tpot_slo_s`) spreads this ingress's writes per second over the
        streams sending; `on_first_token(span, ago_s)`: the first token reached this ingress `ago_s` ago;
        `on_first_part(class_name, stamps, written)`: a response's first part, as it is written (wall clock);
        `on_prefilled(request_id)`: the first part of the dispatch `request_id` (an attempt's id) arrived."""
        self._on_first_part = on_first_part
        self._on_prefilled = on_prefilled
        self._inbox = inbox
        self._submit = submit
        self._door = door
        self._coalesce_s = dict(coalesce_s)
        self._tpot_slo_s = dict(tpot_slo_s or {})
        self._pacing = pacing
        self._on_first_token = on_first_token
        self.streaming = 0  # streamed responses past their first write and not ended
        self.stream_writes = 0

    def pacing_state(self) -> dict:
        """Streams sending, writes so far, and each class's least time between two writes of a stream now."""
        return {"sending": self.streaming, "writes": self.stream_writes,
                "min_gap_s": {name: round(self._min_gap_s(name), 4) for name in self._coalesce_s}}

    def _min_gap_s(self, class_name: str) -> float:
        return self._pacing.min_gap_s(self.streaming, self._tpot_slo_s.get(class_name, 0.0),
                                      self._coalesce_s.get(class_name, 0.0))

    async def parts(self, gen: GenerationRequest, span: RequestSpan, streamed: bool) -> AsyncIterator[ResponsePart]:
        """The response's parts as replicas deliver them; ends with a done or an error part."""
        counted = False
        attempts = self._attempts(gen, span, streamed)
        try:
            async for part in attempts:
                if streamed:
                    self.stream_writes += 1
                    if not counted:
                        self.streaming += 1
                        counted = True
                yield part
        finally:
            await attempts.aclose()  # now, not at garbage collection: it cancels the dispatch of a client gone
            if counted:
                self.streaming -= 1

    async def _attempts(self, gen: GenerationRequest, span: RequestSpan,
                        streamed: bool) -> AsyncIterator[ResponsePart]:
        loop = asyncio.get_running_loop()
        last_write_at: float | None = None
        for attempt in range(1, MAX_DISPATCH_ATTEMPTS + 1):
            # Each attempt has its own id: parts of an attempt whose replica died may still be on their
            # way, and they must not land in the next attempt's stream.
            sent = gen if attempt == 1 else dataclasses.replace(gen, request_id=f"{gen.request_id}.{attempt}")
            queue = self._inbox.open(sent.request_id)
            # Outside the HTTP request's context: Ray Serve would cancel the call when the client leaves,
            # also a client that leaves at `[DONE]` of a served request. Cancelling is ours (below).
            dispatched = detached_task(self._submit(sent))
            received_any = finished = False
            try:
                while True:
                    # The next part, or None once the dispatch call has ended with nothing queued.
                    part = await queue.next_or_none_after(dispatched)
                    if part is None and _returned_a_summary(dispatched):
                        # By push every part is queued here before dispatch returns; by pull the last ones
                        # may still be on their stream, a call of its own.
                        part = await _part_within(queue, PARTS_AFTER_DISPATCH_S)
                        if part is None:
                            yield _error_part("the replica ended the request without completing its response")
                            return
                    if part is not None and streamed and received_any and not part.done:
                        wait_s = next_write_wait_s(last_write_at, self._min_gap_s(gen.priority_class), loop.time())
                        if wait_s > 0:  # what comes meanwhile goes out in this write; a done part at once
                            part = await _held(queue, part, wait_s)
                    if part is not None:
                        # What piled up while this stream was being written goes out as one write:
                        # per-write cost, not tokens, is what saturates an ingress under load.
                        part = merge_parts(part, *_drain(queue))
                        if not received_any:
                            self._on_prefilled(sent.request_id)
                            self._door.router_admitted(gen.priority_class)
                            if part.stamps is not None:
                                stamps = dataclasses.replace(part.stamps, received=gen.received_time or None)
                                self._on_first_part(gen.priority_class, stamps, time.time())
                        if span.first_token_at is None and part.generated_tokens:
                            # Streamed: when it reached us; whole: when the engine made it.
                            self._on_first_token(span, 0.0 if streamed else part.since_first_token_s or 0.0)
                        received_any = True
                        finished = part.done
                        yield part
                        last_write_at = loop.time()
                        if finished:
                            return
                        continue
                    error = dispatched.exception()
                    if error is None and isinstance(dispatched.result(), Refusal):
                        refusal = dispatched.result()
                        if refusal.code == "overloaded":
                            self._door.router_refused(gen.priority_class, refusal.message, refusal.retry_after_s)
                        raise refusal_error(refusal)
                    if isinstance(error, ReplicaFailed) and not received_any and attempt < MAX_DISPATCH_ATTEMPTS:
                        logger.warning("request %s: replica lost before its first token; re-routing", gen.request_id)
                        break
                    logger.error("request %s failed: %s", gen.request_id, type(error).__name__)
                    yield _error_part(describe_failure(error))
                    return
            finally:
                self._inbox.close(sent.request_id)
                if not dispatched.done():
                    if not finished:
                        # The client left: cancelling the dispatch cancels the replica call, which
                        # aborts the engine request and frees its KV cache. A finished request's
                        # call is left to return, so the router core books it as served.
                        dispatched.cancel()
                    dispatched.add_done_callback(_consume_outcome)


async def event_stream(request_id: str, first: ResponsePart, rest: AsyncIterator[ResponsePart], span: RequestSpan,
                       on_end: Callable[[int | str, int], None], path: str = "") -> AsyncIterator[bytes]:
    """A streamed response's bytes; `on_end(status, completion tokens)` when it ends, also when the
    client left mid-stream (the generator is closed). `path`: the route, whose API words the error event."""
    generated = first.generated_tokens
    status: int | str = 200
    try:
        yield first.body
        async for part in rest:
            if part.error:
                span.fail(part.error, llm__stream_error=True)
                status = "stream_error"
                yield part.body + stream_error_event(part.error, path)
                break
            generated = part.generated_tokens or generated
            if part.body:
                yield part.body
    except Exception:
        # Headers are already sent: the only honest answer left is an error event.
        logger.exception("request %s: stream failed", request_id)
        span.fail("stream failed", llm__stream_error=True)
        status = "stream_error"
        yield stream_error_event("internal error while streaming; the response is incomplete", path)
    finally:
        await rest.aclose()
        span.set(http__response__status_code=200)
        on_end(status, generated)
