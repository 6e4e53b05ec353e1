"""OpenTelemetry tracing: one trace per request across the Ray Serve deployments.

Each deployment process configures its own tracer provider from the config; the trace context travels
inside `GenerationRequest.trace_context` (W3C `traceparent`), so the router's and the replica's spans
join the ingress's trace although they run in other processes.
"""
from __future__ import annotations

import time
from typing import Any, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from serve_app.telemetry.log_names import service_logger

logger = service_logger("tracing")
TRACER_NAME = "llmserve"
_propagator = TraceContextTextMapPropagator()
_memory_exporter: InMemorySpanExporter | None = None
_configured = False


def configure_tracing(exporter: str, service_name: str, sample_ratio: float = 1.0,
                      otlp_endpoint: str | None = None) -> None:
    """Install this process's tracer provider once; `exporter` is none, otlp, console or memory."""
    global _configured, _memory_exporter
    if _configured or exporter == "none":
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}),
                              sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
    if exporter == "memory":
        # Tests read spans back from each process; the synchronous processor makes them visible at once.
        _memory_exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(_memory_exporter))
    elif exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        # Without an endpoint the exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT as the SDK documents.
        span_exporter = OTLPSpanExporter(endpoint=otlp_endpoint) if otlp_endpoint else OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    else:
        raise ValueError(f"unknown tracing exporter {exporter!r}")
    trace.set_tracer_provider(provider)
    _configured = True
    logger.info("tracing to %s as service %s", exporter, service_name)


def configure_from_settings(settings: Any) -> None:
    """`configure_tracing` from the config's `telemetry` section."""
    configure_tracing(settings.tracing_exporter, settings.service_name, settings.trace_sample_ratio,
                      settings.otlp_endpoint)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def carrier_of(span: trace.Span | None = None) -> dict[str, str]:
    """The W3C trace context of `span` (or the current span) to send along with a request."""
    carrier: dict[str, str] = {}
    ctx = trace.set_span_in_context(span) if span is not None else None
    _propagator.inject(carrier, context=ctx)
    return carrier


def context_from(carrier: Mapping[str, str] | None) -> otel_context.Context:
    return _propagator.extract(dict(carrier or {}))


def finished_spans() -> list[dict[str, Any]]:
    """Spans this process has finished (memory exporter only), as plain dicts for tests."""
    if _memory_exporter is None:
        return []
    return [span_as_dict(span) for span in _memory_exporter.get_finished_spans()]


def span_as_dict(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    return {
        "name": span.name, "trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "kind": span.kind.name, "start_ns": span.start_time, "end_ns": span.end_time,
        "attributes": dict(span.attributes or {}), "status": span.status.status_code.name,
        "events": [{"name": event.name, "time_ns": event.timestamp, "attributes": dict(event.attributes or {})}
                   for event in span.events],
    }


class RequestSpan:
    """A span whose lifetime is a request's, not a code block's (a stream outlives its handler)."""

    def __init__(self, name: str, *, parent: Mapping[str, str] | None = None, kind: SpanKind = SpanKind.INTERNAL,
                 attributes: Mapping[str, Any] | None = None):
        self.span = tracer().start_span(name, context=context_from(parent) if parent is not None else None,
                                        kind=kind, attributes=dict(attributes or {}))
        self.started = time.monotonic()
        self.started_wall = time.time()  # beside FirstPartStamps, which other processes stamp
        self.first_token_at: float | None = None
        # Metric label, known once the request is parsed; spans may be no-ops but metrics still need it.
        self.priority_class = "unknown"
        self.completion_tokens = 0
        self._ended = False

    def carrier(self) -> dict[str, str]:
        return carrier_of(self.span)

    def set(self, **attributes: Any) -> None:
        self.span.set_attributes({key.replace("__", "."): value for key, value in attributes.items()
                                  if value is not None})

    def first_token(self, ago_s: float = 0.0) -> float | None:
        """Mark the first token (once), `ago_s` seconds before now; returns the time to it in seconds."""
        if self.first_token_at is not None:
            return None
        self.first_token_at = time.monotonic() - ago_s
        self.span.add_event("first_token", timestamp=time.time_ns() - int(ago_s * 1e9))
        return self.first_token_at - self.started

    def fail(self, description: str, **attributes: Any) -> None:
        self.set(**attributes)
        self.span.set_status(Status(StatusCode.ERROR, description))

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self.span.end()
