"""OpenAI-compatible HTTP ingress: validates and tokenizes requests, streams from the router."""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import time
import uuid
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from jinja2 import TemplateError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app import openai_api as api
from serve_app.config import parse_config
from serve_app.deployments.calls import answer_within, resolve
from serve_app.deployments.door import RouterDoor
from serve_app.deployments.errors import REPLICA_LOST, ReplicaFailed
from serve_app.delivery import Batch, Inbox
from serve_app.generation import GenerationChunk, GenerationRequest, SamplingOptions, merge_chunks
from serve_app.openai_api import ApiError
from serve_app.openapi_schema import CHAT_COMPLETION_SCHEMA, COMPLETION_SCHEMA, generation_route
from serve_app.policy.api_keys import AuthenticationFailed, Caller, bearer_token
from serve_app.policy.recent_latency import RecentLatencies
from serve_app.policy.request_limits import RequestLimits
from serve_app.policy.router_core import Refusal
from serve_app.telemetry import tracing
from serve_app.telemetry.gc_pauses import prepare_process_for_serving
from serve_app.telemetry.tracing import RequestSpan, SpanKind

logger = logging.getLogger("serve_app.ingress")
http_app = FastAPI(title="llmserve", description="OpenAI-compatible LLM API over vLLM replicas on Ray Serve")


@http_app.exception_handler(ApiError)
async def _api_error(_: Request, error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _validation_error(error: ValidationError) -> ApiError:
    errors = error.errors()
    # A value that fits no member of a union fails once per member, each with the member's name in its
    # location (`stop.constrained-str`): the field is what those locations share; the deepest says why.
    same_field = [e["loc"] for e in errors if e["loc"][:1] == errors[0]["loc"][:1]]
    shared = next((i for i, parts in enumerate(zip(*same_field)) if len(set(parts)) > 1), min(map(len, same_field)))
    param = ".".join(str(part) for part in errors[0]["loc"][:shared]) or None
    reason = max(errors, key=lambda e: len(e["loc"]) if e["loc"][:1] == errors[0]["loc"][:1] else -1)["msg"]
    return ApiError(400, f"{param}: {reason}" if param else reason, param=param)


async def _json_body(request: Request, max_bytes: int) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > max_bytes:
        raise ApiError(413, f"request body is {len(raw)} bytes; the limit is {max_bytes}", code="body_too_large")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, f"request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def _sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


MAX_DISPATCH_ATTEMPTS = 3
HEALTH_PROBE_TIMEOUT_S = 2.0


async def _next_or_done(queue: asyncio.Queue, dispatched: asyncio.Future) -> GenerationChunk | None:
    """The next queued chunk, or None once the dispatch call has ended with nothing queued."""
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


def _drain(queue: asyncio.Queue) -> list[GenerationChunk]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def _error_chunk(message: str) -> GenerationChunk:
    return GenerationChunk(text="", token_ids=[], finish_reason="error", error=message)


def _refusal_error(refusal: Refusal) -> ApiError:
    error_type = "rate_limit_error" if refusal.status == 429 else "server_error"
    return ApiError(refusal.status, refusal.message, error_type=error_type, code=refusal.code,
                    headers={"Retry-After": str(refusal.retry_after_s)})


async def _prepend(first: GenerationChunk, rest: AsyncIterator[GenerationChunk]) -> AsyncIterator[GenerationChunk]:
    yield first
    async for chunk in rest:
        yield chunk


def _describe_failure(error: BaseException) -> str:
    if isinstance(error, ReplicaFailed):
        return "the model replica serving this request failed; retry"
    if isinstance(error, REPLICA_LOST):
        return "the router handling this request failed; retry"
    return "internal error while generating; the response is incomplete"


def _stream_error(message: str) -> str:
    return _sse({"error": {"message": message, "type": "server_error", "param": None, "code": "stream_failed"}})


@http_app.exception_handler(Exception)
async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s", request.url.path)
    body = {"error": {"message": "internal server error", "type": "server_error", "param": None, "code": None}}
    return JSONResponse(body, status_code=500)


@serve.ingress(http_app)
class Ingress:
    def __init__(self, router: DeploymentHandle, replicas: DeploymentHandle, controller: DeploymentHandle,
                 config: dict):
        from transformers import AutoTokenizer

        self._config = parse_config(config)
        self._router_handle = router
        self._inbox = Inbox()
        self._replica_id = serve.get_replica_context().replica_id.unique_id
        self._replicas = replicas
        self._controller = controller
        self._model_name = self._config.model.served_name
        self._max_model_len = self._config.engine.max_model_len
        self._limits = RequestLimits.from_config(self._config)
        self._classes = self._config.policy_classes()
        self._api_keys = self._config.api_key_registry()
        self._coalesce_s = {c.name: c.stream_coalesce_s for c in self._config.priority_classes}
        self._tokenizer = AutoTokenizer.from_pretrained(str(self._config.model.resolved_path()))
        self._created = int(time.time())
        self._recent_ttft = RecentLatencies()
        self._door = RouterDoor(self._classes, router)
        tracing.configure_from_settings(self._config.telemetry)
        self._metrics = None
        if self._config.telemetry.metrics:
            from serve_app.telemetry.metrics import RequestMetrics
            self._metrics = RequestMetrics()
        self._gc_pauses = prepare_process_for_serving(self._config.process, lambda: len(self._inbox))

    # ---- request building ------------------------------------------------------------------
    def _check_model(self, model: str) -> None:
        if model != self._model_name:
            raise ApiError(404, f"model {model!r} does not exist; available: [{self._model_name!r}]",
                           param="model", code="model_not_found")

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

    def _completion_prompt_ids(self, prompt: Any) -> list[int]:
        if isinstance(prompt, str):
            return self._tokenizer(prompt, add_special_tokens=True).input_ids
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            vocab = len(self._tokenizer)
            if any(t < 0 or t >= vocab for t in prompt):
                raise ApiError(400, f"prompt token ids must be in [0, {vocab})", param="prompt")
            return list(prompt)
        if isinstance(prompt, list) and len(prompt) == 1:
            return self._completion_prompt_ids(prompt[0])
        raise ApiError(400, "prompt must be a string, a list of token ids, or a list of one of those", param="prompt")

    def _refuse_early_at_door(self, http_request: Request, span: RequestSpan) -> Caller:
        """The caller, before the body is read (in Ray Serve, one more round trip to the proxy): a caller
        whose highest allowed class is being refused can only be refused. Booked under the `x-priority`
        header's class if there is one, else the ceiling (the body's `priority` is not known yet)."""
        caller = self._caller(http_request)
        header = http_request.headers.get("x-priority")
        likely = self._classes.clamp_to_ceiling(header, caller.ceiling) if header in self._classes else caller.ceiling
        self._door.refuse_if_closed(caller.ceiling, span, count_as=likely)
        return caller

    def _admit_at_door(self, req: api._Request, http_request: Request, caller: Caller,
                       span: RequestSpan) -> tuple[Caller, str, int]:
        """The caller and class; a 429 at once, before any tokenizing, while the router is refusing
        this class for overload (`serve_app.deployments.door`)."""
        class_name, rank = self._priority(req.priority, http_request, caller)
        span.priority_class = class_name
        self._door.refuse_if_closed(class_name, span)
        return caller, class_name, rank

    def _generation_request(self, prefix: str, prompt_ids: list[int], max_tokens: int, req: api._Request,
                            admitted: tuple[Caller, str, int], span: RequestSpan) -> GenerationRequest:
        caller, class_name, rank = admitted
        request_id = f"{prefix}-{uuid.uuid4().hex}"
        span.priority_class = class_name
        span.set(llm__request_id=request_id, llm__priority_class=class_name, llm__caller=caller.name,
                 llm__prompt_tokens=len(prompt_ids), llm__max_tokens=max_tokens, llm__stream=bool(req.stream))
        return GenerationRequest(
            request_id=request_id, prompt_token_ids=prompt_ids,
            sampling=SamplingOptions(max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
                                     seed=req.seed, stop=req.stop_list(), ignore_eos=req.ignore_eos,
                                     skip_special_tokens=req.skip_special_tokens),
            priority_class=class_name, priority_rank=rank, arrival_time=time.time(), caller=caller.name,
            trace_context=span.carrier(),
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
            span.set(http__response__status_code=200)
            self._request_ended(span, 200, span.completion_tokens)
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
        return await self._traced(http_request, self._completions)

    async def _completions(self, http_request: Request, span: RequestSpan):
        caller = self._refuse_early_at_door(http_request, span)
        body = await _json_body(http_request, self._config.http.max_body_bytes)
        try:
            req = api.CompletionRequest.model_validate(body)
        except ValidationError as error:
            raise _validation_error(error) from None
        self._check_model(req.model)
        self._limits.check_counts(num_stop=len(req.stop_list()))
        admitted = self._admit_at_door(req, http_request, caller, span)
        prompt_ids = self._completion_prompt_ids(req.prompt)
        if not prompt_ids:
            raise ApiError(400, "prompt must not be empty", param="prompt")
        max_tokens = self._limits.max_tokens(req.max_tokens, len(prompt_ids), prompt_param="prompt")
        gen = self._generation_request("cmpl", prompt_ids, max_tokens, req, admitted, span)
        if req.stream:
            chunks = await self._started_chunks(gen, span)
            return StreamingResponse(self._stream_completion(gen, req, chunks, span), media_type="text/event-stream")
        text, finish, completion_tokens, error = await self._collect(gen, span)
        if error:
            raise ApiError(503, error, error_type="server_error", code="replica_failed")
        return api.completion_body(gen.request_id, self._model_name, text, finish,
                                   api.usage(len(prompt_ids), completion_tokens))

    @http_app.post("/v1/chat/completions", **generation_route(api.ChatCompletionRequest, CHAT_COMPLETION_SCHEMA))
    async def chat_completions(self, http_request: Request):
        return await self._traced(http_request, self._chat_completions)

    async def _chat_completions(self, http_request: Request, span: RequestSpan):
        caller = self._refuse_early_at_door(http_request, span)
        body = await _json_body(http_request, self._config.http.max_body_bytes)
        try:
            req = api.ChatCompletionRequest.model_validate(body)
        except ValidationError as error:
            raise _validation_error(error) from None
        self._check_model(req.model)
        self._limits.check_counts(num_messages=len(req.messages), num_stop=len(req.stop_list()))
        admitted = self._admit_at_door(req, http_request, caller, span)
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        try:
            text = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except TemplateError as error:  # a template may refuse a conversation (e.g. roles not alternating)
            raise ApiError(400, f"the model's chat template refused these messages: {error}",
                           param="messages") from None
        prompt_ids = self._tokenizer(text, add_special_tokens=False).input_ids
        max_tokens = self._limits.max_tokens(
            req.requested_max_tokens(), len(prompt_ids), prompt_param="messages",
            max_tokens_param="max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens")
        gen = self._generation_request("chatcmpl", prompt_ids, max_tokens, req, admitted, span)
        if req.stream:
            chunks = await self._started_chunks(gen, span)
            return StreamingResponse(self._stream_chat(gen, req, chunks, span), media_type="text/event-stream")
        content, finish, completion_tokens, error = await self._collect(gen, span)
        if error:
            raise ApiError(503, error, error_type="server_error", code="replica_failed")
        return api.chat_body(gen.request_id, self._model_name, content, finish,
                             api.usage(len(prompt_ids), completion_tokens))

    @http_app.get("/v1/models")
    async def models(self):
        return {"object": "list", "data": [{"id": self._model_name, "object": "model", "created": self._created,
                                            "owned_by": "llmserve", "max_model_len": self._max_model_len}]}

    @http_app.get("/v1/controller/status")
    async def controller_status(self):
        """Per replica: device, planned engine args, predicted vs allocated KV tokens, window cap."""
        return await self._controller.status.remote()

    @http_app.get("/v1/router/stats")
    async def router_stats(self):
        """Per class: queue depth, waits, admitted/refused/expired/served counts; per replica: window;
        recent TTFT as the replicas and as this ingress replica measured it; garbage-collector pauses of
        the router's and this ingress replica's processes."""
        stats = await self._router_handle.stats.remote()
        stats["ingress"] = {"replica": self._replica_id, "ttft_recent": self._recent_ttft.summary(time.monotonic()),
                            "gc_pauses": self._gc_pauses.summary(), "gc_frozen_objects": gc.get_freeze_count()}
        return stats

    @http_app.get("/health", responses={503: {"description": "A request would not be served now; `error` says why.",
                                              "content": {"application/json": {"schema": {
                                                  "type": "object", "required": ["status", "error"]}}}}})
    async def health(self):
        """200 only when a request would be served: the router answers and has a routable replica, the
        controller answers, and an engine answers its own health check. Never waits on a starting engine."""
        router, controller = await asyncio.gather(
            answer_within(self._router_handle.health.remote(), HEALTH_PROBE_TIMEOUT_S),
            answer_within(self._controller.ping.remote(), HEALTH_PROBE_TIMEOUT_S))
        reason = None
        if isinstance(router, BaseException):
            reason = f"the router is not answering ({type(router).__name__})"
        elif not router["started"]:
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

    async def collected_spans(self) -> list[dict[str, Any]]:
        """Spans this replica finished (only with `telemetry.tracing_exporter: memory`, for tests)."""
        return tracing.finished_spans()

    # ---- streaming -----------------------------------------------------------------------------
    async def deliver(self, batch: Batch, target_replica: str | None = None) -> list[str]:
        """Called by replicas with new chunks of this ingress replica's requests; returns the ids of
        requests nobody here reads any more, which the replica then aborts.

        `target_replica` is read by the request router (`TargetedRequestRouter`) that sent it here.
        """
        return self._inbox.deliver(batch)

    async def _chunks(self, gen: GenerationRequest, span: RequestSpan) -> AsyncIterator[GenerationChunk]:
        """The request's chunks as replicas deliver them; ends with a finished or an error chunk."""
        coalesce_s = self._coalesce_s.get(gen.priority_class, 0.0)
        for attempt in range(1, MAX_DISPATCH_ATTEMPTS + 1):
            # Each attempt has its own id: the engine request of an attempt whose router died may
            # still be running, and its chunks must not land in the next attempt's stream.
            sent = gen if attempt == 1 else dataclasses.replace(gen, request_id=f"{gen.request_id}.{attempt}")
            queue = self._inbox.open(sent.request_id)
            call = self._router_handle.submit.remote(sent, self._replica_id)
            dispatched = asyncio.ensure_future(resolve(call))
            received_any = finished = False
            try:
                while True:
                    chunk = queue.get_nowait() if not queue.empty() else await _next_or_done(queue, dispatched)
                    if chunk is not None and received_any and coalesce_s and chunk.finish_reason is None:
                        await asyncio.sleep(coalesce_s)  # the tokens of the next `coalesce_s` go out as one event
                    if chunk is not None:
                        # What piled up while this stream was being written goes out as one event:
                        # per-event cost, not tokens, is what saturates an ingress under load.
                        chunk = merge_chunks(chunk, *_drain(queue))
                        if not received_any:
                            self._door.router_admitted(gen.priority_class)
                        if not received_any and chunk.token_ids:
                            self._first_token(span)
                        received_any = True
                        finished = chunk.finish_reason is not None
                        yield chunk
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
                        # All chunks are sent before dispatch returns; anything left is already queued.
                        if queue.empty():
                            yield _error_chunk("the replica ended the request without a final token")
                            return
                        continue
                    if (isinstance(error, (ReplicaFailed, *REPLICA_LOST)) and not received_any
                            and attempt < MAX_DISPATCH_ATTEMPTS):
                        logger.warning("request %s: %s before its first token; re-routing", gen.request_id,
                                       "replica lost" if isinstance(error, ReplicaFailed) else "router lost")
                        break
                    logger.error("request %s failed: %s", gen.request_id, type(error).__name__)
                    yield _error_chunk(_describe_failure(error))
                    return
            finally:
                self._inbox.close(sent.request_id)
                if not dispatched.done():
                    if not finished:
                        # The client left: cancelling the call cancels it in the router and the replica,
                        # which aborts the engine request and frees its KV cache. A finished request's
                        # call is left to return, so the router books it as served.
                        call.cancel()
                    dispatched.add_done_callback(_consume_outcome)

    def _first_token(self, span: RequestSpan) -> None:
        ttft = span.first_token()
        if ttft is None:
            return
        self._recent_ttft.add(span.priority_class, time.monotonic(), ttft)
        if self._metrics is not None:
            self._metrics.observe_ttft(span.priority_class, ttft)

    async def _started_chunks(self, gen: GenerationRequest, span: RequestSpan) -> AsyncIterator[GenerationChunk]:
        """The request's chunks, once it has been admitted and produced its first one.

        Waiting for the first chunk before answering lets a refusal still be a 429/503 with
        Retry-After instead of an error event inside a 200 stream.
        """
        chunks = self._chunks(gen, span)
        try:
            first = await chunks.__anext__()
        except BaseException:
            await chunks.aclose()
            raise
        return _prepend(first, chunks)

    async def _collect(self, gen: GenerationRequest, span: RequestSpan) -> tuple[str, str | None, int, str | None]:
        parts: list[str] = []
        finish, tokens = None, 0
        async for chunk in self._chunks(gen, span):
            if chunk.error:
                return "", None, 0, chunk.error
            parts.append(chunk.text)
            tokens += len(chunk.token_ids)
            finish = chunk.finish_reason or finish
        span.completion_tokens = tokens
        return "".join(parts), finish, tokens, None

    async def _stream(self, gen: GenerationRequest, req: api._Request, chunks: AsyncIterator[GenerationChunk],
                      obj: str, make_chunk, span: RequestSpan) -> AsyncIterator[str]:
        completion_tokens = 0
        status: int | str = 200
        try:
            async for chunk in chunks:
                if chunk.error:
                    span.fail(chunk.error, llm__stream_error=True)
                    status = "stream_error"
                    yield _stream_error(chunk.error)
                    break
                completion_tokens += len(chunk.token_ids)
                if chunk.text or chunk.finish_reason:
                    yield _sse(make_chunk(chunk.text, chunk.finish_reason))
        except Exception:
            # Headers are already sent: the only honest answer left is an error event.
            logger.exception("request %s: stream failed", gen.request_id)
            span.fail("stream failed", llm__stream_error=True)
            status = "stream_error"
            yield _stream_error("internal error while streaming; the response is incomplete")
        finally:
            # Also when the client left mid-stream (the generator is closed): the span must end.
            span.set(http__response__status_code=200)
            self._request_ended(span, status, completion_tokens)
        if req.include_usage_in_stream():
            yield _sse(api.usage_chunk(gen.request_id, self._model_name, self._created, obj,
                                       api.usage(len(gen.prompt_token_ids), completion_tokens)))
        yield _sse("[DONE]")

    async def _stream_completion(self, gen: GenerationRequest, req: api.CompletionRequest,
                                 chunks: AsyncIterator[GenerationChunk], span: RequestSpan) -> AsyncIterator[str]:
        def make(text: str, finish: str | None) -> dict:
            return api.completion_chunk(gen.request_id, self._model_name, self._created, text, finish)
        async for event in self._stream(gen, req, chunks, "text_completion", make, span):
            yield event

    async def _stream_chat(self, gen: GenerationRequest, req: api.ChatCompletionRequest,
                           chunks: AsyncIterator[GenerationChunk], span: RequestSpan) -> AsyncIterator[str]:
        yield _sse(api.chat_chunk(gen.request_id, self._model_name, self._created,
                                  {"role": "assistant", "content": ""}, None))

        def make(text: str, finish: str | None) -> dict:
            delta = {"content": text} if text else {}
            return api.chat_chunk(gen.request_id, self._model_name, self._created, delta, finish)
        async for event in self._stream(gen, req, chunks, "chat.completion.chunk", make, span):
            yield event
