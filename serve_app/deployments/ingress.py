"""OpenAI-compatible HTTP ingress: ours in front (keys, classes, admission, routing), vLLM's app behind.

Each ingress replica routes its own generation requests (`serve_app.deployments.dispatcher`) to an
LLM replica, whose vLLM OpenAI app answers them; the response comes back in parts
(`serve_app.delivery`) and is written out here. The body is forwarded
as the client sent it (less our `priority` class name): nothing is parsed into a model or tokenized
here, so every field behaves exactly as in `vllm serve`, and this process needs no model files.
"""
from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import gc
import json
import logging
import time
import uuid
from http import HTTPStatus
from typing import Any, AsyncIterator, Iterable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app import openai_api as api
from serve_app.config import parse_config
from serve_app.deployments.calls import answer_within
from serve_app.deployments.dispatcher import Dispatcher
from serve_app.deployments.errors import ReplicaFailed
from serve_app.delivery import Batch, Inbox
from serve_app.generation import GenerationRequest, ResponsePart, merge_parts
from serve_app.openai_api import ApiError, RequestPeek
from serve_app.openapi_schema import CHAT_COMPLETION_SCHEMA, COMPLETION_SCHEMA, error_responses, generation_route
from serve_app.policy.api_keys import AuthenticationFailed, Caller, bearer_token
from serve_app.policy.recent_latency import RecentLatencies
from serve_app.policy.replica_choice import prefix_key_of
from serve_app.policy.request_limits import RequestLimits
from serve_app.policy.router_core import Refusal
from serve_app.telemetry import tracing
from serve_app.telemetry.gc_pauses import prepare_process_for_serving
from serve_app.telemetry.log_filters import quiet_routine_calls
from serve_app.telemetry.tracing import RequestSpan, SpanKind

logger = logging.getLogger("serve_app.ingress")
http_app = FastAPI(title="llmserve", description="OpenAI-compatible LLM API over vLLM replicas on Ray Serve")


@http_app.exception_handler(ApiError)
async def _api_error(_: Request, error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


@http_app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    """Unknown routes and methods in OpenAI's error shape, not FastAPI's `{"detail": ...}`."""
    if error.status_code == 404:
        message = f"no route {request.url.path}; see /docs for the API"
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(error.detail)
    body = api.error_body(message, "invalid_request_error", code="not_found" if error.status_code == 404 else None)
    return JSONResponse(body, status_code=error.status_code, headers=getattr(error, "headers", None))


async def _raw_body(request: Request, max_bytes: int) -> bytes:
    raw = await request.body()
    if len(raw) > max_bytes:
        raise ApiError(413, f"request body is {len(raw)} bytes; the limit is {max_bytes}", code="body_too_large")
    return raw


MAX_DISPATCH_ATTEMPTS = 3
HEALTH_PROBE_TIMEOUT_S = 2.0


async def _next_or_done(queue: asyncio.Queue, dispatched: asyncio.Future) -> ResponsePart | None:
    """The next queued part, or None once the dispatch call has ended with nothing queued."""
    getter = asyncio.ensure_future(queue.get())
    try:
        await asyncio.wait({getter, dispatched}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getter.done():
            getter.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    return None


def _consume_outcome(future: asyncio.Future) -> None:
    """Retrieve a cancelled call's outcome so asyncio does not log it as unhandled."""
    if not future.cancelled():
        future.exception()


def _drain(queue: asyncio.Queue) -> list[ResponsePart]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def _error_part(message: str) -> ResponsePart:
    return ResponsePart(b"", done=True, error=message)


def _refusal_error(refusal: Refusal) -> ApiError:
    error_type = "rate_limit_error" if refusal.status == 429 else "server_error"
    return ApiError(refusal.status, refusal.message, error_type=error_type, code=refusal.code,
                    headers={"Retry-After": str(refusal.retry_after_s)})


def _describe_failure(error: BaseException) -> str:
    if isinstance(error, ReplicaFailed):
        return "the model replica serving this request failed; retry"
    return "internal error while generating; the response is incomplete"


def _stream_error(message: str) -> bytes:
    """An error event and the end of the stream, as vLLM's own server ends a stream that failed."""
    body = api.error_body(message, "server_error", code="stream_failed")
    return f"data: {json.dumps(body)}\n\ndata: [DONE]\n\n".encode()


# Of the headers vLLM's app answers with, those that describe the body (the length is the framework's).
FORWARDED_RESPONSE_HEADERS = {"content-type"}
# Of the client's headers, those vLLM's app reads (the request id is ours, set by the replica).
FORWARDED_REQUEST_HEADERS = {"content-type", "accept"}
PASSTHROUGH_TIMEOUT_S = 10.0


def _openai_error_shape(body: bytes, status: int) -> bytes:
    """vLLM's app answers a few errors in FastAPI's `{"detail": ...}` (a body it cannot parse): in
    OpenAI's shape, as vLLM's own handler words its others."""
    if status < 400 or not body.startswith(b'{"detail"'):
        return body
    detail = json.loads(body)["detail"]
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return json.dumps(api.error_body(detail if isinstance(detail, str) else json.dumps(detail), phrase,
                                     code=status)).encode()


def _route_path(http_request: Request) -> str:
    """The path as vLLM's app knows it: the matched route's, without the application's route prefix."""
    return http_request.scope["route"].path


def _kept(headers: Iterable[tuple[str, str]] | None, names: set[str]) -> list[tuple[str, str]]:
    """The headers among `names` (case-insensitive), forwarded to or from vLLM's app."""
    return [(name, value) for name, value in headers or () if name.lower() in names]


@http_app.exception_handler(Exception)
async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s", request.url.path)
    return JSONResponse(api.error_body("internal server error", "server_error"), status_code=500)


@serve.ingress(http_app)
class Ingress:
    async def __init__(self, replicas: DeploymentHandle, controller: DeploymentHandle, config: dict):
        quiet_routine_calls()  # no access-log line per internal call (ping, run, deliver)
        self._config = parse_config(config)
        self._inbox = Inbox()
        self._replica_id = serve.get_replica_context().replica_id.unique_id
        self._replicas = replicas
        self._controller = controller
        self._max_model_len = self._config.engine.max_model_len
        self._limits = RequestLimits.from_config(self._config)
        self._classes = self._config.policy_classes()
        self._api_keys = self._config.api_key_registry()
        self._coalesce_s = {c.name: c.stream_coalesce_s for c in self._config.priority_classes}
        self._recent_ttft = RecentLatencies()
        tracing.configure_from_settings(self._config.telemetry)
        self._dispatcher = Dispatcher(self._replica_id, replicas, controller, self._config)
        self._door = self._dispatcher.door
        self._dispatcher.start()
        self._metrics = None
        if self._config.telemetry.metrics:
            from serve_app.telemetry.metrics import RequestMetrics
            self._metrics = RequestMetrics()
        self._gc_pauses = prepare_process_for_serving(self._config.process,
                                                      lambda: len(self._inbox) + self._dispatcher.in_flight)

    # ---- request building ------------------------------------------------------------------
    def _caller(self, http_request: Request) -> Caller:
        presented = bearer_token(http_request.headers.get("authorization")) or http_request.headers.get("x-api-key")
        try:
            return self._api_keys.authenticate(presented)
        except AuthenticationFailed as error:
            raise ApiError(401, str(error), error_type="authentication_error", code="invalid_api_key") from None

    def _priority(self, body_value: str | None, http_request: Request, caller: Caller) -> tuple[str, int]:
        """The request's class: body `priority`, else the `x-priority` header, else the default,
        which is lowered to the caller's ceiling; asking above the ceiling is refused."""
        asked = body_value or http_request.headers.get("x-priority")
        name = asked or self._config.default_priority
        if name not in self._classes:
            raise ApiError(400, f"unknown priority class {name!r}; known: {list(self._classes.names)}",
                           param="priority", code="unknown_priority_class")
        allowed = self._classes.clamp_to_ceiling(name, caller.ceiling)
        if allowed != name and asked:
            raise ApiError(403, f"priority class {name!r} is above what caller {caller.name!r} may use "
                           f"(at most {caller.ceiling!r})", param="priority", error_type="permission_error",
                           code="priority_above_ceiling")
        return allowed, self._classes.level_of(allowed)

    def _refuse_early_at_door(self, http_request: Request, span: RequestSpan) -> Caller:
        """The caller, before the body is read (in Ray Serve, one more round trip to the proxy): a caller
        whose highest allowed class is being refused can only be refused. Booked under the `x-priority`
        header's class if there is one, else the ceiling (the body's `priority` is not known yet)."""
        caller = self._caller(http_request)
        header = http_request.headers.get("x-priority")
        likely = self._classes.clamp_to_ceiling(header, caller.ceiling) if header in self._classes else caller.ceiling
        self._door.refuse_if_closed(caller.ceiling, span, count_as=likely)
        return caller

    def _admit_at_door(self, asked: str | None, http_request: Request, caller: Caller,
                       span: RequestSpan) -> tuple[Caller, str, int]:
        """The caller and class; a 429 at once while the router is refusing this class for overload
        (`serve_app.deployments.door`)."""
        class_name, rank = self._priority(asked, http_request, caller)
        span.priority_class = class_name
        self._door.refuse_if_closed(class_name, span)
        return caller, class_name, rank

    def _generation_request(self, http_request: Request, peek: RequestPeek, admitted: tuple[Caller, str, int],
                            span: RequestSpan) -> GenerationRequest:
        caller, class_name, rank = admitted
        path = _route_path(http_request)
        request_id = uuid.uuid4().hex  # vLLM's app prefixes it (`chatcmpl-`, `cmpl-`, `resp_`) in the response
        prompt_tokens = min(peek.estimated_prompt_tokens, self._max_model_len)
        # Without a stated budget, a request may take the rest of the context: price it so.
        max_new = peek.max_new_tokens or max(self._max_model_len - prompt_tokens, 1)
        span.set(llm__request_id=request_id, llm__priority_class=class_name, llm__caller=caller.name,
                 llm__estimated_prompt_tokens=prompt_tokens, llm__max_tokens=max_new, llm__stream=peek.stream)
        return GenerationRequest(
            request_id=request_id, path=path, body=peek.body,
            headers=_kept(http_request.headers.items(), FORWARDED_REQUEST_HEADERS), priority_class=class_name,
            priority_rank=rank, estimated_prompt_tokens=prompt_tokens, max_new_tokens=max_new,
            prefix_key=prefix_key_of(peek.prompt_head) if peek.prompt_head else None,
            arrival_time=time.time(), caller=caller.name, trace_context=span.carrier(),
        )

    # ---- routes --------------------------------------------------------------------------------
    async def _traced(self, http_request: Request, handler) -> Any:
        """Run a generation route inside its request span; a streamed response ends the span when it ends."""
        span = RequestSpan("ingress.request", kind=SpanKind.SERVER,
                           attributes={"http.request.method": http_request.method, "url.path": http_request.url.path})
        try:
            response = await handler(http_request, span)
        except ApiError as error:
            span.fail(error.message, http__response__status_code=error.status, error__type=error.code or error.error_type)
            self._request_ended(span, error.status, 0)
            raise
        except BaseException as error:
            span.fail(type(error).__name__, http__response__status_code=500)
            self._request_ended(span, 500, 0)
            raise
        if not isinstance(response, StreamingResponse):
            span.set(http__response__status_code=response.status_code)
            if response.status_code >= 400:
                span.fail(f"vLLM answered {response.status_code}")
            self._request_ended(span, response.status_code, span.completion_tokens)
        return response

    def _request_ended(self, span: RequestSpan, status: int | str, completion_tokens: int) -> None:
        tpot = None
        if span.first_token_at is not None and completion_tokens > 1:
            tpot = (time.monotonic() - span.first_token_at) / (completion_tokens - 1)
        span.set(llm__completion_tokens=completion_tokens)
        span.end()
        if self._metrics is not None:
            self._metrics.observe_end(span.priority_class, status, time.monotonic() - span.started, tpot)

    @http_app.post("/v1/completions", **generation_route(api.CompletionRequest, COMPLETION_SCHEMA))
    async def completions(self, http_request: Request):
        return await self._traced(http_request, self._generate)

    @http_app.post("/v1/chat/completions", **generation_route(api.ChatCompletionRequest, CHAT_COMPLETION_SCHEMA))
    async def chat_completions(self, http_request: Request):
        return await self._traced(http_request, self._generate)

    @http_app.post("/v1/responses", include_in_schema=False)
    async def responses(self, http_request: Request):
        """OpenAI's Responses API, as vLLM serves it (`store` keeps responses in the replica that made them)."""
        return await self._traced(http_request, self._generate)

    async def _generate(self, http_request: Request, span: RequestSpan) -> Response:
        caller = self._refuse_early_at_door(http_request, span)
        peek = api.peek_request(await _raw_body(http_request, self._config.http.max_body_bytes))
        self._limits.check_counts(num_messages=peek.num_messages, num_stop=peek.num_stop)
        self._limits.check_output_budget(peek.budget_field, peek.budget)
        admitted = self._admit_at_door(peek.priority, http_request, caller, span)
        gen = self._generation_request(http_request, peek, admitted, span)
        parts = self._parts(gen, span, streamed=peek.stream)
        try:
            first = await parts.__anext__()
        except BaseException:
            await parts.aclose()
            raise
        if first.error:
            await parts.aclose()
            raise ApiError(503, first.error, error_type="server_error", code="replica_failed")
        headers = dict(_kept(first.headers, FORWARDED_RESPONSE_HEADERS))
        status = first.status or 200
        if not first.done and status == 200 and headers.get("content-type", "").startswith("text/event-stream"):
            return StreamingResponse(self._stream(gen, first, parts, span), status_code=status,
                                     media_type="text/event-stream")
        body = [first.body]
        last = first
        async for part in parts:
            if part.error:
                raise ApiError(503, part.error, error_type="server_error", code="replica_failed")
            body.append(part.body)
            last = part
        span.completion_tokens = last.generated_tokens
        return Response(_openai_error_shape(b"".join(body), status), status_code=status, headers=headers)

    async def _passthrough(self, http_request: Request, path: str | None = None) -> Response:
        """A route of vLLM's app that generates nothing, answered by any ready replica (no queue)."""
        headers = _kept(http_request.headers.items(), FORWARDED_REQUEST_HEADERS)
        body = await _raw_body(http_request, self._config.http.max_body_bytes) if http_request.method == "POST" else b""
        answer = await answer_within(self._replicas.serve_http.remote(
            http_request.method, path or _route_path(http_request), headers, body, http_request.url.query),
            PASSTHROUGH_TIMEOUT_S)
        if isinstance(answer, BaseException):
            raise ApiError(503, f"no model replica answered ({type(answer).__name__}); replicas may be starting",
                           error_type="server_error", code="no_replica", headers={"Retry-After": "5"})
        status, response_headers, response_body = answer
        return Response(_openai_error_shape(response_body, status), status_code=status,
                        headers=dict(_kept(response_headers, FORWARDED_RESPONSE_HEADERS)))

    @http_app.get("/v1/models", responses=error_responses(401, 503))
    async def models(self, http_request: Request):
        """The served model as vLLM lists it (`max_model_len`, `root`, permissions)."""
        self._caller(http_request)
        return await self._passthrough(http_request, "/v1/models")

    @http_app.get("/v1/models/{model_id:path}", responses=error_responses(401, 404, 503))
    async def model(self, model_id: str, http_request: Request):
        """One model by id (OpenAI's `models.retrieve`; `vllm serve` has no such route)."""
        listing = await self.models(http_request)
        if listing.status_code != 200:
            return listing
        for entry in json.loads(listing.body)["data"]:
            if entry["id"] == model_id:
                return JSONResponse(entry)
        raise ApiError(404, f"The model `{model_id}` does not exist.", param="model", code="model_not_found")

    @http_app.post("/tokenize", include_in_schema=False)
    async def tokenize(self, http_request: Request):
        """vLLM's tokenizer endpoint (prompt or chat messages to token ids)."""
        self._caller(http_request)
        return await self._passthrough(http_request)

    @http_app.post("/detokenize", include_in_schema=False)
    async def detokenize(self, http_request: Request):
        self._caller(http_request)
        return await self._passthrough(http_request)

    @http_app.get("/version", responses=error_responses(503))
    async def version(self, http_request: Request):
        """vLLM's version on the replicas."""
        return await self._passthrough(http_request)

    @http_app.get("/v1/controller/status")
    async def controller_status(self):
        """Per replica: device, planned engine args, predicted vs allocated KV tokens, window cap."""
        return await self._controller.status.remote()

    @http_app.get("/v1/router/stats")
    async def router_stats(self):
        """This ingress replica's router: per class, queue depth, waits, admitted/refused/expired/served
        counts; per replica, window (this ingress's lease); recent TTFT as the replicas and as this
        ingress replica measured it; this process's garbage-collector pauses."""
        stats = self._dispatcher.stats()
        stats["ingress"] = {"replica": self._replica_id, "ttft_recent": self._recent_ttft.summary(time.monotonic()),
                            "gc_pauses": self._gc_pauses.summary(), "gc_frozen_objects": gc.get_freeze_count()}
        return stats

    @http_app.get("/health", responses={503: {"description": "A request would not be served now; `error` says why.",
                                              "content": {"application/json": {"schema": {
                                                  "type": "object", "required": ["status", "error"]}}}}})
    async def health(self):
        """200 only when a request would be served: this ingress's router has a routable replica, the
        controller answers, and an engine answers its own health check. Never waits on a starting engine."""
        router = self._dispatcher.health()
        controller = await answer_within(self._controller.ping.remote(), HEALTH_PROBE_TIMEOUT_S)
        reason = None
        if not router["started"]:
            reason = "the router is starting (no replica list yet)"
        elif isinstance(controller, BaseException) or not router["controller_answering"]:
            reason = "the controller is not answering"
        elif router["routable_replicas"] == 0:
            reason = "no model replica is ready (engines starting, or all failed)"
        engine = None if reason else await answer_within(self._replicas.ping.remote(), HEALTH_PROBE_TIMEOUT_S)
        if isinstance(engine, BaseException):
            reason = f"no engine answered its health check ({type(engine).__name__})"
        if reason:
            return JSONResponse({"status": "unhealthy", "error": reason}, status_code=503)
        return {"status": "ok", "routable_replicas": router["routable_replicas"], "replica": engine}

    @http_app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def unknown_route(self, path: str, http_request: Request):
        """Anything else (vLLM's admin routes included: they are not exposed) is a 404 in OpenAI's shape,
        or a 405 for a known route asked with another method."""
        known = {route.path for route in http_app.routes if route is not http_request.scope["route"]}
        raise StarletteHTTPException(405 if f"/{path}" in known else 404)

    async def collected_spans(self) -> list[dict[str, Any]]:
        """Spans this replica finished (only with `telemetry.tracing_exporter: memory`, for tests)."""
        return tracing.finished_spans()

    # ---- streaming -----------------------------------------------------------------------------
    async def deliver(self, batch: Batch, target_replica: str | None = None) -> list[str]:
        """Called by replicas with new parts of this ingress replica's responses; returns the ids of
        requests nobody here reads any more, which the replica then aborts.

        `target_replica` is read by the request router (`TargetedRequestRouter`) that sent it here.
        """
        return self._inbox.deliver(batch)

    async def _parts(self, gen: GenerationRequest, span: RequestSpan, streamed: bool) -> AsyncIterator[ResponsePart]:
        """The response's parts as replicas deliver them; ends with a done or an error part."""
        coalesce_s = self._coalesce_s.get(gen.priority_class, 0.0) if streamed else 0.0
        for attempt in range(1, MAX_DISPATCH_ATTEMPTS + 1):
            # Each attempt has its own id: parts of an attempt whose replica died may still be on their
            # way, and they must not land in the next attempt's stream.
            sent = gen if attempt == 1 else dataclasses.replace(gen, request_id=f"{gen.request_id}.{attempt}")
            queue = self._inbox.open(sent.request_id)
            # Outside the HTTP request's context: Ray Serve would cancel the call when the client leaves,
            # also a client that leaves at `[DONE]` of a served request. Cancelling is ours (below).
            dispatched = asyncio.get_running_loop().create_task(self._dispatcher.submit(sent),
                                                                context=contextvars.Context())
            received_any = finished = False
            try:
                while True:
                    part = queue.get_nowait() if not queue.empty() else await _next_or_done(queue, dispatched)
                    if part is not None and received_any and coalesce_s and not part.done:
                        await asyncio.sleep(coalesce_s)  # the events of the next `coalesce_s` go out as one write
                    if part is not None:
                        # What piled up while this stream was being written goes out as one write:
                        # per-write cost, not tokens, is what saturates an ingress under load.
                        part = merge_parts(part, *_drain(queue))
                        if not received_any:
                            self._door.router_admitted(gen.priority_class)
                        if span.first_token_at is None and part.generated_tokens:
                            # Streamed: when it reached us; whole: when the engine made it.
                            self._first_token(span, 0.0 if streamed else part.since_first_token_s or 0.0)
                        received_any = True
                        finished = part.done
                        yield part
                        if finished:
                            return
                        continue
                    error = dispatched.exception()
                    if error is None and isinstance(dispatched.result(), Refusal):
                        refusal = dispatched.result()
                        if refusal.code == "overloaded":
                            self._door.router_refused(gen.priority_class, refusal.message, refusal.retry_after_s)
                        raise _refusal_error(refusal)
                    if error is None:
                        # All parts are sent before dispatch returns; anything left is already queued.
                        if queue.empty():
                            yield _error_part("the replica ended the request without completing its response")
                            return
                        continue
                    if isinstance(error, ReplicaFailed) and not received_any and attempt < MAX_DISPATCH_ATTEMPTS:
                        logger.warning("request %s: replica lost before its first token; re-routing", gen.request_id)
                        break
                    logger.error("request %s failed: %s", gen.request_id, type(error).__name__)
                    yield _error_part(_describe_failure(error))
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

    def _first_token(self, span: RequestSpan, ago_s: float = 0.0) -> None:
        ttft = span.first_token(ago_s)
        if ttft is None:
            return
        self._recent_ttft.add(span.priority_class, time.monotonic(), ttft)
        if self._metrics is not None:
            self._metrics.observe_ttft(span.priority_class, ttft)

    async def _stream(self, gen: GenerationRequest, first: ResponsePart, rest: AsyncIterator[ResponsePart],
                      span: RequestSpan) -> AsyncIterator[bytes]:
        generated = first.generated_tokens
        status: int | str = 200
        try:
            yield first.body
            async for part in rest:
                if part.error:
                    span.fail(part.error, llm__stream_error=True)
                    status = "stream_error"
                    yield part.body + _stream_error(part.error)
                    break
                generated = part.generated_tokens or generated
                if part.body:
                    yield part.body
        except Exception:
            # Headers are already sent: the only honest answer left is an error event.
            logger.exception("request %s: stream failed", gen.request_id)
            span.fail("stream failed", llm__stream_error=True)
            status = "stream_error"
            yield _stream_error("internal error while streaming; the response is incomplete")
        finally:
            # Also when the client left mid-stream (the generator is closed): the span must end.
            await rest.aclose()
            span.set(http__response__status_code=200)
            self._request_ended(span, status, generated)
