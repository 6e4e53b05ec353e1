"""OpenAPI pieces for the ingress routes, which read the raw body (so FastAPI cannot infer them).

Request bodies come from the pydantic models in `openai_api` (which document the common fields; vLLM's
app on the replica validates every field); errors are OpenAI's shape.
Used by the published /openapi.json and by the HTTP fuzz test (no Ray, no vLLM).
"""
from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       # vLLM's own errors carry the HTTP status as an integer code; ours a string or null.
                       "param": {"type": ["string", "null"]}, "code": {"type": ["string", "integer", "null"]}},
    }},
}

ERROR_DESCRIPTIONS = {
    400: "Invalid request (as vLLM's own server judges it); `param` names the field.",
    401: "Missing or unknown API key.",
    403: "Priority class above the caller's ceiling.",
    404: "Unknown model.",
    405: "Method not allowed on this route.",
    413: "Request body larger than `http.max_body_bytes`.",
    429: "Rate limit or predicted queue wait past the class's deadline; see Retry-After.",
    503: "Queue deadline passed or replica failure; see Retry-After.",
}

_USAGE = {"type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
          "properties": {name: {"type": "integer", "minimum": 0}
                         for name in ("prompt_tokens", "completion_tokens", "total_tokens")}}
_FINISH = {"type": ["string", "null"]}


def _body_schema(obj: str, choice: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object", "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": {"type": "string"}, "object": {"const": obj}, "created": {"type": "integer"},
            "model": {"type": "string"}, "usage": _USAGE,
            "choices": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["index", "finish_reason", *choice],
                "properties": {"index": {"type": "integer"}, "finish_reason": _FINISH, **choice}}},
        },
    }


COMPLETION_SCHEMA = _body_schema("text_completion", {"text": {"type": "string"}})
CHAT_COMPLETION_SCHEMA = _body_schema("chat.completion", {"message": {
    "type": "object", "required": ["role", "content"],
    "properties": {"role": {"const": "assistant"}, "content": {"type": ["string", "null"]}}}})


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its `$defs` references replaced by the definitions (our models are not recursive),
    so it stands alone inside an OpenAPI operation, where `#/$defs/...` would point at the document."""
    defs = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(copy.deepcopy(defs[ref.removeprefix("#/$defs/")]))
            return {key: resolve(value) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"description": ERROR_DESCRIPTIONS[status],
                     "content": {"application/json": {"schema": ERROR_SCHEMA}}} for status in statuses}


GENERATION_ERRORS = (400, 401, 403, 404, 413, 429, 503)


def generation_route(request_model: type[BaseModel], response_schema: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for a POST route's decorator: its JSON request body and every response."""
    return {
        "openapi_extra": {"requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_refs(request_model.model_json_schema())}},
        }},
        "responses": {
            200: {"description": "The completion; with `stream: true`, server-sent events ending in `[DONE]`.",
                  "content": {"application/json": {"schema": response_schema}, "text/event-stream": {}}},
            **error_responses(*GENERATION_ERRORS),
        },
    }
