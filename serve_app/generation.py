"""What crosses the Ray Serve handles: one generation request and the chunks streamed back.

Plain dataclasses (cheap to pickle) with no Ray or vLLM imports, so every layer and test can use them.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingOptions:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    skip_special_tokens: bool = True


@dataclass
class GenerationRequest:
    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingOptions
    priority_class: str
    # 0 is the highest class; vLLM schedules lower values first.
    priority_rank: int = 0
    # Arrival time at the ingress (wall clock), for queue-wait accounting downstream.
    arrival_time: float = 0.0
    # The authenticated caller's name (never the key): the router's rate limit is per caller.
    caller: str = "anonymous"
    # W3C trace context of the span that sent this request on (OpenTelemetry), so spans downstream join its trace.
    trace_context: dict[str, str] = field(default_factory=dict)

    @property
    def cost_tokens(self) -> int:
        """Upper bound of the tokens this request will hold in a replica's KV cache."""
        return len(self.prompt_token_ids) + self.sampling.max_tokens


@dataclass
class GenerationChunk:
    """New output since the previous chunk of the same request."""

    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    num_prompt_tokens: int = 0
    # Set on the error chunk that ends a stream the engine could not finish.
    error: str | None = None


@dataclass
class RunSummary:
    """What a replica reports when a request ends (the tokens themselves went by delivery)."""

    replica_id: str
    num_prompt_tokens: int
    num_generated: int = 0
    finish_reason: str | None = None
    ttft_s: float | None = None
    duration_s: float = 0.0


def merge_chunks(first: GenerationChunk, *rest: GenerationChunk) -> GenerationChunk:
    """Consecutive chunks of one request as one (a client that fell behind gets one event, not many)."""
    merged = first
    for chunk in rest:
        merged = GenerationChunk(
            text=merged.text + chunk.text, token_ids=merged.token_ids + chunk.token_ids,
            finish_reason=chunk.finish_reason, num_prompt_tokens=chunk.num_prompt_tokens or merged.num_prompt_tokens,
            error=chunk.error,
        )
    return merged
