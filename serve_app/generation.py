"""What crosses the Ray Serve handles: one HTTP call for a model replica and the response's parts.

Plain dataclasses (cheap to pickle) with no Ray or vLLM imports, so every layer and test can use them.
The body is the client's own JSON, read by vLLM's OpenAI app on the replica (tokenized there, once);
the router sees only estimates made from the body's size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

Headers = list[tuple[str, str]]


@dataclass
class GenerationRequest:
    request_id: str
    path: str
    body: bytes
    headers: Headers
    priority_class: str
    # 0 is the highest class; vLLM schedules lower values first.
    priority_rank: int = 0
    # The router's cost estimate: prompt tokens from the body's text, plus the tokens it may generate.
    estimated_prompt_tokens: int = 0
    max_new_tokens: int = 0
    # Hash of the prompt's beginning, for first-block affinity (None: no affinity).
    prefix_key: int | None = None
    # Arrival time at the ingress (wall clock), for queue-wait accounting downstream.
    arrival_time: float = 0.0
    # The authenticated caller's name (never the key): the router's rate limit is per caller.
    caller: str = "anonymous"
    # W3C trace context of the span that sent this request on (OpenTelemetry), so spans downstream join its trace.
    trace_context: dict[str, str] = field(default_factory=dict)
    # When the ingress called the replica with it (wall clock; 0: not dispatched yet).
    dispatched_at: float = 0.0
    # Streamed (SSE): its first token reaches the ingress on its own; a whole answer only at its end.
    streamed: bool = False
    # When the ingress's route began (wall clock; 0: unknown): before the caller's key, the body's read and
    # parse, and the door, which `arrival_time` comes after.
    received_time: float = 0.0
    # The only LLM replica that can serve it (None: any): the one holding the stored response it continues.
    bound_replica: str | None = None

    @property
    def cost_tokens(self) -> int:
        """Estimated upper bound of the tokens this request will hold in a replica's KV cache."""
        return self.estimated_prompt_tokens + self.max_new_tokens


@dataclass(frozen=True)
class EngineStamps:
    """Wall-clock times inside the LLM replica before its first token: vLLM's engine handed the request
    (its OpenAI layer has parsed, rendered and tokenized it), then, from the engine core's own stats, the
    request entering the scheduler's queue, first scheduled, and its first token made in the core (before
    that token crossed back to the replica's process). The core's three are None where vLLM did not report
    them (its stats off, or a version without `RequestOutput.metrics`)."""

    submitted: float
    queued: float | None = None
    scheduled: float | None = None
    core_first_token: float | None = None

    def stages(self, replica_started: float, first_token: float) -> dict[str, float]:
        """The replica's stage (`replica_started` to `first_token`, the replica's sight of it) split."""
        stages = {"replica_before_engine": self.submitted - replica_started}
        if self.queued is not None and self.scheduled is not None and self.core_first_token is not None:
            stages.update(engine_intake=self.queued - self.submitted, engine_queue=self.scheduled - self.queued,
                          engine_prefill=self.core_first_token - self.scheduled,
                          engine_output=first_token - self.core_first_token)
        return stages


@dataclass(frozen=True)
class FirstPartStamps:
    """Wall-clock times (`time.time()`) along a response's first part's way: the ingress's arrival and
    dispatch, the replica's start, the engine's first token (None: the response began without one, e.g.
    an error), the part queued for delivery, its arrival back in the ingress's inbox (None until
    then), and when the ingress's route began, before `arrived` (None: not known where stamped).
    Across processes on one node the clock is the same; across nodes it is as close as their clocks
    are (NTP: milliseconds)."""

    arrived: float
    dispatched: float
    replica_started: float
    engine_first_token: float | None
    queued_for_delivery: float
    delivered: float | None = None
    received: float | None = None
    engine: EngineStamps | None = None

    def stages(self, written: float) -> dict[str, float]:
        """Seconds per stage up to `written` (when the ingress wrote the part out): the router's queue and
        the ingress's own work before the call, the hop to the replica, the replica until the engine's
        first token (vLLM's OpenAI layer, its scheduler's queue, the prefill), from that token to the part
        queued (vLLM's formatting, our relay), the delivery call (waiting for the call in flight, then its
        own), and the ingress until the part is written (its event loop, the stream's reader); with
        `received`, the ingress's intake before `arrived` too (key, body read and parse, door), which
        `total` leaves out so that it stays comparable with runs stamped without it; with `engine`, the
        replica's stage split at the engine's hand-over, queue and prefill (`EngineStamps.stages`)."""
        delivered = self.delivered if self.delivered is not None else written
        stages = {"before_dispatch": self.dispatched - self.arrived,
                  "hop_to_replica": self.replica_started - self.dispatched,
                  "delivery": delivered - self.queued_for_delivery,
                  "ingress_write": written - delivered, "total": written - self.arrived}
        if self.received is not None:
            stages["intake"] = self.arrived - self.received
        if self.engine_first_token is not None:
            stages["replica_to_first_token"] = self.engine_first_token - self.replica_started
            stages["first_token_to_delivery"] = self.queued_for_delivery - self.engine_first_token
            if self.engine is not None:
                stages.update(self.engine.stages(self.replica_started, self.engine_first_token))
        return stages


@dataclass
class ResponsePart:
    """The next bytes of one response; the first part carries its status and headers."""

    body: bytes
    status: int | None = None
    headers: Headers | None = None
    # The response's last part.
    done: bool = False
    # Tokens the engine had generated for this request when the part was sent (TTFT, TPOT, usage).
    generated_tokens: int = 0
    # How long before this part was sent the engine made the request's first token: a response that
    # is not streamed arrives whole, and its time to first token is known only where it was made.
    since_first_token_s: float | None = None
    # Set on the part that ends a response the replica could not finish.
    error: str | None = None
    # The first part only: where it spent its time on the way (`FirstPartStamps`).
    stamps: FirstPartStamps | None = None


@dataclass
class RunSummary:
    """What a replica reports when a request ends (the response itself went by delivery)."""

    replica_id: str
    num_prompt_tokens: int = 0
    num_cached_prompt_tokens: int = 0  # prompt tokens the engine found in its prefix cache
    num_generated: int = 0
    finish_reason: str | None = None
    ttft_s: float | None = None
    duration_s: float = 0.0
    # The HTTP status vLLM's app answered (a 400 from validation is a served request, not a failure).
    status: int | None = None
    # The engine's mean inter-token time over its last seconds as the request ended: the batch's current
    # speed, which the router's window steers by (`tpot_signal`); None when the replica has no figure.
    engine_inter_token_s: float | None = None
    # A Responses API call's response id (vLLM stores it in this replica): the ingress binds continuations here.
    response_id: str | None = None


def merge_parts(first: ResponsePart, *rest: ResponsePart) -> ResponsePart:
    """Consecutive parts of one response as one (a client that fell behind gets one write, not many)."""
    if not rest:
        return first
    last = rest[-1]
    return ResponsePart(
        body=first.body + b"".join(part.body for part in rest), status=first.status, headers=first.headers,
        done=last.done, generated_tokens=max(part.generated_tokens for part in (first, *rest)),
        since_first_token_s=next((p.since_first_token_s for p in (*reversed(rest), first)
                                  if p.since_first_token_s is not None), None),
        error=next((part.error for part in rest if part.error), first.error), stamps=first.stamps,
    )
