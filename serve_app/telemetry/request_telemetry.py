"""A generation request's span, metrics and recent-TTFT sample as the ingress sees it: the span opens
with the route and ends with the response (for a stream, when its last byte is written)."""
from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Mapping

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from serve_app.generation import FirstPartStamps
from serve_app.openai_api import ApiError
from serve_app.policy.recent_latency import RecentLatencies
from serve_app.statistics import tpot_s
from serve_app.telemetry.slowest_first_parts import SlowestFirstParts
from serve_app.telemetry.tracing import RequestSpan, SpanKind


FIRST_PART_PATH_KEPT_S = 120.0
RECENT_S = 10.0  # what `/v1/router/stats` summarizes unless asked for more


def first_part_window_s(query: Mapping[str, str]) -> float:
    """`/v1/router/stats?first_part_window_s=S`: how far back its `first_part_path` reaches (0 < S <= 120;
    default 10); an error in OpenAI's shape otherwise."""
    text = query.get("first_part_window_s")
    if text is None:
        return RECENT_S
    try:
        window_s = float(text)
    except ValueError:
        window_s = float("nan")
    if not 0 < window_s <= FIRST_PART_PATH_KEPT_S:
        raise ApiError(400, f"first_part_window_s must be a number of seconds above 0 and at most "
                       f"{FIRST_PART_PATH_KEPT_S:g}", param="first_part_window_s")
    return window_s


class RequestTelemetry:
    def __init__(self, metrics: Any | None):
        """`metrics`: `serve_app.telemetry.metrics.RequestMetrics`, or None when metrics are off."""
        self._metrics = metrics
        self.recent_ttft = RecentLatencies()
        # Per stage of a first part's way (`FirstPartStamps.stages`), the last seconds' samples: kept for
        # FIRST_PART_PATH_KEPT_S so that a benchmark can ask for a whole load point's (`first_part_window_s`).
        self.first_part_path = RecentLatencies(horizon_s=FIRST_PART_PATH_KEPT_S)
        # Per class, the slowest first parts since start, each with its stages (a flood's rare outliers).
        self.slowest_first_parts = SlowestFirstParts()

    async def traced(self, http_request: Request,
                     handler: Callable[[Request, RequestSpan], Awaitable[Response]]) -> Response:
        """Run a generation route inside its request span; a streamed response ends the span when it ends."""
        span = RequestSpan("ingress.request", kind=SpanKind.SERVER,
                           attributes={"http.request.method": http_request.method, "url.path": http_request.url.path})
        try:
            response = await handler(http_request, span)
        except ApiError as error:
            span.fail(error.message, http__response__status_code=error.status, error__type=error.code or error.error_type)
            self.ended(span, error.status, 0)
            raise
        except BaseException as error:
            span.fail(type(error).__name__, http__response__status_code=500)
            self.ended(span, 500, 0)
            raise
        if not isinstance(response, StreamingResponse):
            span.set(http__response__status_code=response.status_code)
            if response.status_code >= 400:
                span.fail(f"vLLM answered {response.status_code}")
            self.ended(span, response.status_code, span.completion_tokens)
        return response

    def ended(self, span: RequestSpan, status: int | str, completion_tokens: int) -> None:
        now = time.monotonic()
        ttft = None if span.first_token_at is None else span.first_token_at - span.started
        span.set(llm__completion_tokens=completion_tokens)
        span.end()
        if self._metrics is not None:
            self._metrics.observe_end(span.priority_class, status, now - span.started,
                                      tpot_s(now - span.started, ttft, completion_tokens))

    def first_part(self, class_name: str, stamps: FirstPartStamps, written: float) -> None:
        """Where a response's first part spent its time, by stage (wall clock: `written` when written out)."""
        now = time.monotonic()
        stages = stamps.stages(written)
        for stage, seconds in stages.items():
            self.first_part_path.add(stage, now, seconds)
        self.slowest_first_parts.add(class_name, stages, written)

    def first_token(self, span: RequestSpan, ago_s: float = 0.0) -> None:
        ttft = span.first_token(ago_s)
        if ttft is None:
            return
        self.recent_ttft.add(span.priority_class, time.monotonic(), ttft)
        if self._metrics is not None:
            self._metrics.observe_ttft(span.priority_class, ttft)
