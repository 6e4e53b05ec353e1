"""OpenAI-compatible HTTP ingress: ours in front (keys, classes, admission, routing), vLLM's app behind.

Each ingress replica routes its own generation requests (`serve_app.deployments.dispatcher`) to an
LLM replica, whose vLLM OpenAI app answers them; the response comes back in parts
(`serve_app.delivery`) and is written out here. The body is forwarded
as the client sent it (less our `priority` class name): nothing is parsed into a model or tokenized
here, so every field behaves exactly as in `vllm serve`, and this process needs no model files.
The pieces live in `serve_app.http`; this class wires them to Ray Serve.
"""
from __future__ import annotations

import functools
import gc
import json
import time
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app import openai_api as api
from serve_app.config import parse_config
from serve_app.deployments.calls import answer_within
from serve_app.deployments.dispatcher import Dispatcher
from serve_app.deployments.ingress_link import ingress_delivery
from serve_app.delivery import Batch, Inbox
from serve_app.http.errors import (install_error_handlers, metrics_not_here, openai_error_shape, path_in_app,
                                   replica_failed_error)
from serve_app.http.forwarding import FORWARDED_REQUEST_HEADERS, FORWARDED_RESPONSE_HEADERS, kept, raw_body, route_path
from serve_app.http.intake import RequestIntake
from serve_app.http.response_parts import ResponseParts, event_stream
from serve_app.openai_api import ApiError
from serve_app.openapi_schema import CHAT_COMPLETION_SCHEMA, COMPLETION_SCHEMA, error_responses, generation_route
from serve_app.policy.request_limits import RequestLimits
from serve_app.policy.stream_pacing import StreamPacing
from serve_app.telemetry import tracing
from serve_app.telemetry.gc_pauses import prepare_process_for_serving
from serve_app.telemetry.log_filters import install_prompt_flush, quiet_routine_calls
from serve_app.telemetry.log_names import service_logger
from serve_app.telemetry.request_telemetry import RequestTelemetry, first_part_window_s
from serve_app.telemetry.tracing import RequestSpan

logger = service_logger("ingress")
http_app = FastAPI(title="llmserve", description="OpenAI-compatible LLM API over vLLM replicas on Ray Serve")
install_error_handlers(http_app)
HEALTH_PROBE_TIMEOUT_S = 2.0
PASSTHROUGH_TIMEOUT_S = 10.0


@serve.ingress(http_app)
class Ingress:
    async def __init__(self, replicas: DeploymentHandle, controller: DeploymentHandle, config: dict):
        quiet_routine_calls()  # no access-log line per internal call (ping, run, deliver)
        install_prompt_flush()  # warnings and our lines reach the replica's log file at once
        self._config = parse_config(config)
        self._inbox = Inbox()
        self._replica_id = serve.get_replica_context().replica_id.unique_id
        self._replicas = replicas
        self._controller = controller
        self._limits = RequestLimits.from_config(self._config)
        tracing.configure_from_settings(self._config.telemetry)
        # By pull or direct: this replica holds a stream (and direct, a connection) to each LLM replica it uses.
        self._collector = ingress_delivery(self._config.http, replicas, self._replica_id, self._inbox)
        self._dispatcher = Dispatcher(self._replica_id, replicas, controller, self._config,
                                      **(self._collector.dispatcher_options() if self._collector else {}))
        self._intake = RequestIntake(self._config, self._dispatcher.classes, self._dispatcher.door)
        metrics = None
        if self._config.telemetry.metrics:
            from serve_app.telemetry.metrics import RequestMetrics
            metrics = RequestMetrics()
        self._telemetry = RequestTelemetry(metrics)
        http = self._config.http
        self._responses = ResponseParts(
            self._inbox, self._dispatcher.submit, self._dispatcher.door,
            {c.name: c.stream_coalesce_s for c in self._config.priority_classes}, self._telemetry.first_token,
            StreamPacing(http.stream_writes_per_s, http.stream_hold_max_tpots),
            {c.name: c.tpot_slo_s for c in self._config.priority_classes}, self._telemetry.first_part,
            self._dispatcher.first_token)
        self._dispatcher.start()
        self._process = prepare_process_for_serving(self._config.process,
                                                    lambda: len(self._inbox) + self._dispatcher.in_flight)

    # ---- routes --------------------------------------------------------------------------------
    @http_app.post("/v1/completions", **generation_route(api.CompletionRequest, COMPLETION_SCHEMA))
    async def completions(self, http_request: Request):
        return await self._telemetry.traced(http_request, self._generate)

    @http_app.post("/v1/chat/completions", **generation_route(api.ChatCompletionRequest, CHAT_COMPLETION_SCHEMA))
    async def chat_completions(self, http_request: Request):
        return await self._telemetry.traced(http_request, self._generate)

    @http_app.post("/v1/responses", include_in_schema=False)
    @http_app.post("/v1/messages", include_in_schema=False)
    @http_app.post("/invocations", include_in_schema=False)
    async def responses_and_messages(self, http_request: Request):
        """OpenAI's Responses API (`store` keeps responses in the replica that made them), Anthropic's
        Messages API (our own errors in its shape: `shaped_for`) and SageMaker's `/invocations` (a chat or
        completion body, told apart by vLLM), as vLLM serves them."""
        return await self._telemetry.traced(http_request, self._generate)

    async def _generate(self, http_request: Request, span: RequestSpan) -> Response:
        caller = self._intake.refuse_early_at_door(http_request, span)
        peek = api.peek_request(await raw_body(http_request, self._config.http.max_body_bytes))
        self._limits.check_counts(num_messages=peek.num_messages, num_stop=peek.num_stop)
        self._limits.check_output_budget(peek.budget_field, peek.budget)
        admitted = self._intake.admit_at_door(peek.priority, http_request, caller, span)
        gen = self._intake.generation_request(http_request, peek, admitted, span)
        if peek.previous_response_id is not None and gen.path == api.RESPONSES_PATH:
            gen.bound_replica = await self._response_holder(http_request, peek.previous_response_id)
            span.set(llm__bound_replica=gen.bound_replica or "")
        parts = self._responses.parts(gen, span, streamed=peek.stream)
        try:
            first = await parts.__anext__()
        except BaseException:
            await parts.aclose()
            raise
        if first.error:
            await parts.aclose()
            raise replica_failed_error(first.error)
        headers = dict(kept(first.headers, FORWARDED_RESPONSE_HEADERS))
        status = first.status or 200
        if not first.done and status == 200 and headers.get("content-type", "").startswith("text/event-stream"):
            ended = functools.partial(self._telemetry.ended, span)
            return StreamingResponse(event_stream(gen.request_id, first, parts, span, ended, gen.path),
                                     status_code=status, media_type="text/event-stream")
        body = [first.body]
        last = first
        async for part in parts:
            if part.error:
                raise replica_failed_error(part.error)
            body.append(part.body)
            last = part
        span.completion_tokens = last.generated_tokens
        return Response(openai_error_shape(b"".join(body), status), status_code=status, headers=headers)

    async def _passthrough(self, http_request: Request, path: str | None = None,
                           target_replica: str | None = None) -> Response:
        """A route of vLLM's app that generates nothing, answered by any ready replica (no queue), or by
        `target_replica`."""
        headers = kept(http_request.headers.items(), FORWARDED_REQUEST_HEADERS)
        body = await raw_body(http_request, self._config.http.max_body_bytes) if http_request.method == "POST" else b""
        answer = await self._replica_http(http_request.method, path or route_path(http_request), headers, body,
                                          http_request.url.query, target_replica)
        if isinstance(answer, BaseException):
            raise ApiError(503, f"no model replica answered ({type(answer).__name__}); replicas may be starting",
                           error_type="server_error", code="no_replica", headers={"Retry-After": "5"})
        status, response_headers, response_body = answer
        return Response(openai_error_shape(response_body, status), status_code=status,
                        headers=dict(kept(response_headers, FORWARDED_RESPONSE_HEADERS)))

    async def _replica_http(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes, query: str,
                            target_replica: str | None) -> Any:
        """One call of vLLM's app on an LLM replica (any, or `target_replica`): its (status, headers, body), or
        the error that stood in for it."""
        return await answer_within(self._replicas.serve_http.remote(
            method, path, headers, body, query, target_replica=target_replica), PASSTHROUGH_TIMEOUT_S)

    async def _response_holder(self, http_request: Request, response_id: str) -> str | None:
        """The LLM replica that holds stored response `response_id` (vLLM keeps each in the replica that made
        it, and a request continuing one elsewhere gets a 404): the one this ingress relayed it from, else
        asked of one after another; None where one replica routes everything or none has it (vLLM's own 404
        then answers the request). Asked of all at once, the two calls' routing stalled this process's event
        loop for 5 s and the proxy answered 500 (CPU test, two replicas): one at a time, as `stored_response`
        asks."""
        replica_ids = self._dispatcher.replica_ids
        if len(replica_ids) < 2:
            return None
        if (known := self._dispatcher.response_holder(response_id)) is not None:
            return known
        headers = kept(http_request.headers.items(), FORWARDED_REQUEST_HEADERS)
        path = f"/v1/responses/{quote(response_id, safe='')}"
        for replica_id in replica_ids:
            answer = await self._replica_http("GET", path, headers, b"", "", replica_id)
            if not isinstance(answer, BaseException) and answer[0] == 200:
                return replica_id
        return None

    @http_app.get("/v1/responses/{response_id}", include_in_schema=False)
    @http_app.post("/v1/responses/{response_id}/cancel", include_in_schema=False)
    async def stored_response(self, response_id: str, http_request: Request):
        """A stored response, or its cancellation. vLLM stores them (with `VLLM_ENABLE_RESPONSES_API_STORE=1`
        in `replicas.env`, as `vllm serve` needs it in its environment) in the replica that made them, so each
        routable replica is asked until one has it; none has: vLLM's 404, or 503 if a replica did not answer."""
        self._intake.caller(http_request)
        answer, unanswered = None, None
        replica_ids = self._dispatcher.replica_ids
        if len(replica_ids) > 1 and (known := self._dispatcher.response_holder(response_id)) is not None:
            replica_ids = [known, *(replica_id for replica_id in replica_ids if replica_id != known)]
        for replica_id in replica_ids or [None]:
            try:
                answer = await self._passthrough(http_request, path_in_app(http_request), target_replica=replica_id)
            except ApiError as error:
                unanswered = error
                continue
            if answer.status_code != 404:
                return answer
        if unanswered is not None:
            raise unanswered
        return answer

    @http_app.get("/v1/models", responses=error_responses(401, 503))
    async def models(self, http_request: Request):
        """The served model as vLLM lists it (`max_model_len`, `root`, permissions)."""
        self._intake.caller(http_request)
        return await self._passthrough(http_request, "/v1/models")

    @http_app.get("/v1/models/{model_id:path}", responses=error_responses(401, 404, 503))
    async def model(self, model_id: str, http_request: Request):
        """One model by id (OpenAI's `models.retrieve`; `vllm serve` has no such route)."""
        if (listing := await self.models(http_request)).status_code != 200:
            return listing
        for entry in json.loads(listing.body)["data"]:
            if entry["id"] == model_id:
                return JSONResponse(entry)
        raise ApiError(404, f"The model `{model_id}` does not exist.", param="model", code="model_not_found")

    @http_app.post("/tokenize", include_in_schema=False)
    @http_app.post("/detokenize", include_in_schema=False)
    @http_app.post("/v1/messages/count_tokens", include_in_schema=False)
    async def tokenizer_routes(self, http_request: Request):
        """vLLM's tokenizer endpoints (prompt or chat messages to token ids and back; Anthropic's count)."""
        self._intake.caller(http_request)
        return await self._passthrough(http_request)

    @http_app.get("/version", responses=error_responses(503))
    @http_app.get("/tokenizer_info", include_in_schema=False)
    async def version(self, http_request: Request):
        """vLLM's version on the replicas; its tokenizer's settings where `engine.frontend` enables them
        (`enable_tokenizer_info_endpoint`, as `vllm serve` needs the flag: else vLLM's 404)."""
        return await self._passthrough(http_request)

    @http_app.get("/load", include_in_schema=False)
    async def load(self):
        """vLLM's load figure, requests held (queued or running), counted by this ingress replica whatever the
        flags (`vllm serve` counts only with `--enable-server-load-tracking`): a balancer in front can use it."""
        return {"server_load": self._dispatcher.in_flight}

    @http_app.get("/v1/controller/status")
    async def controller_status(self):
        """Per replica: device, planned engine args, predicted vs allocated KV tokens, window cap."""
        return await self._controller.status.remote()

    @http_app.get("/v1/router/stats")
    async def router_stats(self, http_request: Request):
        """This ingress replica's router: per class, queue depth, waits, admitted/refused/expired/served
        counts; per replica, window (this ingress's lease); recent TTFT as the replicas and as this
        ingress replica measured it; this process's garbage-collector pauses and event-loop stalls; its streams
        (sending, writes so far, each class's least time between two writes of a stream now: pacing); where
        responses' first parts spent their time over the last `first_part_window_s` (query; 10 s) by stage
        (`FirstPartStamps.stages`); per class the slowest first parts since start with theirs; and how look-ups
        of stored responses found their replica (`stored_responses`)."""
        window_s, stats, now = first_part_window_s(http_request.query_params), self._dispatcher.stats(), time.monotonic()
        stats["ingress"] = {"replica": self._replica_id, "ttft_recent": self._telemetry.recent_ttft.summary(now),
                            "first_part_path": self._telemetry.first_part_path.summary(now, window_s),
                            "slowest_first_parts": self._telemetry.slowest_first_parts.summary(),
                            "gc_pauses": self._process.gc_pauses.summary(), "gc_frozen_objects": gc.get_freeze_count(),
                            "loop_stalls": self._process.loop_stalls(),
                            "streams": self._responses.pacing_state(),
                            "delivery": self._config.http.delivery,
                            "delivery_streams": self._collector.stats() if self._collector else None}
        return stats

    @http_app.get("/ping", include_in_schema=False)  # SageMaker's health check, as in `vllm serve`
    @http_app.post("/ping", include_in_schema=False)
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
        elif not router["routing_current"]:
            reason = f"routing is not current: {router['refresh_failure'] or 'no lease refresh lately'}"
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
        if path == "metrics":  # `vllm serve` has it here; `vllm bench serve` and scrapers ask for it
            raise metrics_not_here()
        known = {route.path for route in http_app.routes if route is not http_request.scope["route"]}
        raise StarletteHTTPException(405 if f"/{path}" in known else 404)

    async def collected_spans(self) -> list[dict[str, Any]]:
        """Spans this replica finished (only with `telemetry.tracing_exporter: memory`, for tests)."""
        return tracing.finished_spans()

    # ---- streaming -----------------------------------------------------------------------------
    async def deliver(self, batch: Batch, target_replica: str | None = None) -> list[str]:
        """Delivery by push: called by replicas with new parts of this ingress replica's responses; returns
        the ids of requests nobody here reads any more, which the replica then aborts.

        `target_replica` is read by the request router (`TargetedRequestRouter`) that sent it here.
        """
        return self._inbox.deliver(batch)
