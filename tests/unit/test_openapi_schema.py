"""The OpenAPI pieces describe what the routes really accept and answer."""
from __future__ import annotations

import json

import jsonschema
import pytest

from serve_app import openai_api as api
from serve_app.openapi_schema import (CHAT_COMPLETION_SCHEMA, COMPLETION_SCHEMA, ERROR_SCHEMA, GENERATION_ERRORS,
                                      generation_route, inline_refs)


def body_schema(model) -> dict:
    return generation_route(model, {})["openapi_extra"]["requestBody"]["content"]["application/json"]["schema"]


def test_request_body_stands_alone():
    schema = body_schema(api.ChatCompletionRequest)
    assert "$ref" not in json.dumps(schema) and "$defs" not in schema
    message = schema["properties"]["messages"]["items"]
    assert message["properties"]["role"]["enum"] == ["system", "user", "assistant", "tool", "developer"]


@pytest.mark.parametrize(("model", "body", "valid"), [
    (api.ChatCompletionRequest, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, True),
    (api.ChatCompletionRequest, {"model": "m", "messages": []}, False),
    (api.ChatCompletionRequest, {"model": "m", "messages": [{"role": "user", "content": [{"text": "x"}]}]}, False),
    (api.CompletionRequest, {"model": "m", "prompt": [1, 2], "stop": ["\n"], "seed": 2**63 - 1}, True),
    (api.CompletionRequest, {"model": "m", "prompt": "x", "stop": ""}, False),
    (api.CompletionRequest, {"model": "m", "prompt": "x", "seed": 2**63}, False),
])
def test_schema_agrees_with_the_model(model, body, valid):
    """What the published schema accepts, the request model accepts, and the other way round."""
    schema_ok = jsonschema.Draft202012Validator(body_schema(model)).is_valid(body)
    try:
        model.model_validate(body)
        model_ok = True
    except ValueError:
        model_ok = False
    assert schema_ok == model_ok == valid


def test_inline_refs_resolves_nested_definitions():
    schema = {"$defs": {"A": {"type": "object", "properties": {"b": {"$ref": "#/$defs/B"}}}, "B": {"type": "integer"}},
              "properties": {"a": {"$ref": "#/$defs/A"}, "list": {"items": [{"$ref": "#/$defs/B"}]}}}
    assert inline_refs(schema) == {"properties": {"a": {"type": "object", "properties": {"b": {"type": "integer"}}},
                                                  "list": {"items": [{"type": "integer"}]}}}


def test_declared_responses_match_what_the_builders_produce():
    responses = generation_route(api.CompletionRequest, COMPLETION_SCHEMA)["responses"]
    assert set(responses) == {200, *GENERATION_ERRORS}
    jsonschema.validate(api.completion_body("cmpl-1", "m", "text", "length", api.usage(3, 2)), COMPLETION_SCHEMA)
    jsonschema.validate(api.chat_body("chat-1", "m", "text", "stop", api.usage(3, 2)), CHAT_COMPLETION_SCHEMA)
    jsonschema.validate(api.ApiError(400, "bad", param="prompt").body(), ERROR_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"error": "bad"}, ERROR_SCHEMA)


def test_content_parts_text_only():
    message = api.ChatMessage.model_validate(
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}},
                                     {"type": "text", "text": "b"}]})
    assert message.text() == "ab"
