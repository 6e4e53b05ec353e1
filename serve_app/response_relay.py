"""Replica side of a response: vLLM's app answers through ASGI callbacks (status, then body chunks);
the ingress replica wants `ResponsePart`s, the first one carrying the status and headers, each one the
token count so far, and `done` at the stream's `[DONE]` event. Pure: the clock is passed in.
"""
from __future__ import annotations

import time
from typing import Callable, Protocol

from serve_app.generation import EngineStamps, FirstPartStamps, Headers, ResponsePart

# As the ingress words a replica lost mid-stream (`describe_failure`): to the client the two are one failure.
ENGINE_DIED_MESSAGE = "the model replica serving this request failed (its engine died); retry"


class TokenTally(Protocol):
    """What the engine has produced so far for the request (`serve_app.vllm_frontend.RequestTally`)."""

    generated_tokens: int
    first_token_at: float | None
    engine_submitted_at: float | None
    engine_core_times: tuple[float, float, float] | None
    engine_dead: bool


class ResponseRelay:
    def __init__(self, put: Callable[[ResponsePart], int], tally: TokenTally,
                 on_first_token: Callable[[float], None] = lambda ago_s: None,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time,
                 arrived_at: float = 0.0, dispatched_at: float = 0.0, received_at: float | None = None):
        """`put` queues a part for the ingress and returns its sequence number; `on_first_token` is told,
        with each part after the first token, how long ago that token came (the span keeps the first).
        The first part carries `FirstPartStamps` from the request's `arrived_at` and `dispatched_at` at the
        ingress (wall clock) and `received_at`, when the replica's call began (this relay's creation if not
        given)."""
        self._put = put
        self._tally = tally
        self._on_first_token = on_first_token
        self._clock = clock
        self._wall_clock = wall_clock
        self._arrived_at, self._dispatched_at = arrived_at, dispatched_at
        self._started_at = wall_clock() if received_at is None else received_at
        self.status: int | None = None
        self._headers: Headers = []
        self._start_sent = False
        self.done = False
        self.last_seq = 0
        self.first_bytes = b""  # the response's first bytes (a stored response's id is there)

    def on_start(self, status: int, headers: Headers) -> None:
        self.status, self._headers = status, headers

    def on_body(self, body: bytes, more: bool) -> None:
        if self.done:
            return
        if self._tally.engine_dead:  # what vLLM's app says now is its own error for the dead engine
            self.fail(ENGINE_DIED_MESSAGE)
            return
        # A stream is complete at its `[DONE]` event; the empty last message that follows must not
        # be what the ingress waits for, or a client that leaves at `[DONE]` cancels a served request.
        done = not more or body.rstrip().endswith(b"data: [DONE]")
        if body or done:
            if not self.first_bytes:
                self.first_bytes = body
            self.done = done
            self.send(ResponsePart(body, done=done, generated_tokens=self._tally.generated_tokens))

    def fail(self, message: str, status: int | None = None) -> None:
        """End the response with an error part (the ingress turns it into a 503 or an error event). Where the
        engine died, a begun response ends with the replica's failure, and of one not begun nothing is sent:
        the call then fails as a lost replica's does (the replica raises `EngineDied`) and is re-routed."""
        if self._tally.engine_dead:
            if not self._start_sent:
                self.done = True
                return
            message, status = ENGINE_DIED_MESSAGE, None
        if status is not None:
            self.status = status
        self.done = True
        self.send(ResponsePart(b"", done=True, error=message))

    def send(self, part: ResponsePart) -> None:
        first = not self._start_sent
        if first:  # the status goes with the first bytes: a stream's begin with its first token
            part.status, part.headers = self.status if self.status is not None else 500, self._headers
            self._start_sent = True
        if self._tally.first_token_at is not None:
            part.since_first_token_s = self._clock() - self._tally.first_token_at
            self._on_first_token(part.since_first_token_s)
        if first:
            now = self._wall_clock()
            # One reading of both clocks puts every monotonic time of the tally on the wall clock alike.
            offset = now - self._clock()
            first_token = None if self._tally.first_token_at is None else self._tally.first_token_at + offset
            part.stamps = FirstPartStamps(self._arrived_at, self._dispatched_at, self._started_at, first_token, now,
                                          engine=self._engine_stamps(offset))
        self.last_seq = self._put(part)

    def _engine_stamps(self, offset: float) -> EngineStamps | None:
        """The tally's engine times (this host's monotonic clock) plus `offset`: on the other stamps' wall clock."""
        if self._tally.engine_submitted_at is None:
            return None
        core = self._tally.engine_core_times
        queued, scheduled, core_first = (None, None, None) if core is None else (t + offset for t in core)
        return EngineStamps(self._tally.engine_submitted_at + offset, queued, scheduled, core_first)
