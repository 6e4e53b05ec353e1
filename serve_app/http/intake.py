"""A generation request's way in: who calls (API key), which class it runs in (body `priority`, the
`x-priority` header or the default, capped at the caller's ceiling), whether the admission door is open,
and the `GenerationRequest` the router queues. Nothing is parsed beyond `RequestPeek`."""
from __future__ import annotations

import time
import uuid

from fastapi import Request

from serve_app.config import AppConfig
from serve_app.deployments.door import LocalDoor
from serve_app.generation import GenerationRequest
from serve_app.http.forwarding import FORWARDED_REQUEST_HEADERS, kept, route_path
from serve_app.openai_api import ApiError, RequestPeek
from serve_app.policy.api_keys import AuthenticationFailed, Caller, bearer_token
from serve_app.policy.priority_classes import PriorityClasses
from serve_app.policy.replica_choice import prefix_key_of
from serve_app.telemetry.tracing import RequestSpan

Admitted = tuple[Caller, str, int]  # caller, class name, class rank


class RequestIntake:
    def __init__(self, config: AppConfig, classes: PriorityClasses, door: LocalDoor):
        self._default_class = config.default_priority
        self._max_model_len = config.engine.max_model_len
        self._api_keys = config.api_key_registry()
        self._classes = classes
        self._door = door

    def caller(self, http_request: Request) -> Caller:
        presented = bearer_token(http_request.headers.get("authorization")) or http_request.headers.get("x-api-key")
        try:
            return self._api_keys.authenticate(presented)
        except AuthenticationFailed as error:
            raise ApiError(401, str(error), error_type="authentication_error", code="invalid_api_key") from None

    def _priority(self, body_value: str | int | None, http_request: Request, caller: Caller) -> tuple[str, int]:
        """The request's class: body `priority` (a name, or vLLM's integer: the class at that level),
        else the `x-priority` header, else the default, which is lowered to the caller's ceiling; asking
        above the ceiling is refused."""
        if isinstance(body_value, int):
            body_value = self._classes.name_for_vllm_priority(body_value)
        asked = body_value or http_request.headers.get("x-priority")
        name = asked or self._default_class
        if name not in self._classes:
            raise ApiError(400, f"unknown priority class {name!r}; known: {list(self._classes.names)}",
                           param="priority", code="unknown_priority_class")
        allowed = self._classes.clamp_to_ceiling(name, caller.ceiling)
        if allowed != name and asked:
            raise ApiError(403, f"priority class {name!r} is above what caller {caller.name!r} may use "
                           f"(at most {caller.ceiling!r})", param="priority", error_type="permission_error",
                           code="priority_above_ceiling")
        return allowed, self._classes.level_of(allowed)

    def refuse_early_at_door(self, http_request: Request, span: RequestSpan) -> Caller:
        """The caller, before the body is read (in Ray Serve, one more round trip to the proxy): a caller
        whose highest allowed class is being refused can only be refused. Booked under the `x-priority`
        header's class if there is one, else the ceiling (the body's `priority` is not known yet)."""
        caller = self.caller(http_request)
        header = http_request.headers.get("x-priority")
        likely = self._classes.clamp_to_ceiling(header, caller.ceiling) if header in self._classes else caller.ceiling
        self._door.refuse_if_closed(caller.ceiling, span, count_as=likely)
        return caller

    def admit_at_door(self, asked: str | None, http_request: Request, caller: Caller, span: RequestSpan) -> Admitted:
        """The caller and class; a 429 at once while the router is refusing this class for overload
        (`serve_app.deployments.door`)."""
        class_name, rank = self._priority(asked, http_request, caller)
        span.priority_class = class_name
        self._door.refuse_if_closed(class_name, span)
        return caller, class_name, rank

    def generation_request(self, http_request: Request, peek: RequestPeek, admitted: Admitted,
                           span: RequestSpan) -> GenerationRequest:
        caller, class_name, rank = admitted
        request_id = uuid.uuid4().hex  # vLLM's app prefixes it (`chatcmpl-`, `cmpl-`, `resp_`) in the response
        prompt_tokens = min(peek.estimated_prompt_tokens, self._max_model_len)
        # Without a stated budget, a request may take the rest of the context: price it so.
        max_new = peek.max_new_tokens or max(self._max_model_len - prompt_tokens, 1)
        span.set(llm__request_id=request_id, llm__priority_class=class_name, llm__caller=caller.name,
                 llm__estimated_prompt_tokens=prompt_tokens, llm__max_tokens=max_new, llm__stream=peek.stream)
        return GenerationRequest(
            request_id=request_id, path=route_path(http_request), body=peek.body,
            headers=kept(http_request.headers.items(), FORWARDED_REQUEST_HEADERS), priority_class=class_name,
            priority_rank=rank, estimated_prompt_tokens=prompt_tokens, max_new_tokens=max_new,
            prefix_key=prefix_key_of(peek.prompt_head) if peek.prompt_head else None,
            arrival_time=time.time(), caller=caller.name, trace_context=span.carrier(), streamed=peek.stream,
            received_time=span.started_wall,
        )
