"""The OpenAPI pieces describe what the routes really accept and answer."""
from __future__ import annotations

import json

import jsonschema
import pytest

from serve_app import openai_api as api
from serve_app.openapi_schema import COMPLETION_SCHEMA, ERROR_SCHEMA, GENERATION_ERRORS, generation_route, inline_refs


def body_schema(model) -> dict:
    return generation_route(model, {})["openapi_extra"]["requestBody"]["content"]["application/json"]["schema"]


def test_request_body_stands_alone():
    schema = body_schema(api.ChatCompletionRequest)
    assert "$ref" not in json.dumps(schema) and "$defs" not in schema
    assert schema["properties"]["messages"]["items"]["required"] == ["role"]
    assert schema["additionalProperties"] is True  # every other vLLM field is accepted


@pytest.mark.parametrize(("model", "body", "valid"), [
    (api.ChatCompletionRequest, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, True),
    (api.ChatCompletionRequest, {"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 2,
                                 "logprobs": True, "top_logprobs": 2, "response_format": {"type": "json_object"}}, True),
    (api.ChatCompletionRequest, {"model": "m", "messages": []}, False),
    (api.CompletionRequest, {"model": "m", "prompt": [1, 2], "stop": ["\n"], "seed": 2**63 - 1, "echo": True}, True),
    (api.CompletionRequest, {"model": "m", "prompt": "x", "n": 0}, False),
    (api.CompletionRequest, {"model": "m", "prompt": "x", "seed": 2**63}, False),
])
def test_schema_agrees_with_the_model(model, body, valid):
    """What the published schema accepts, the documentation model accepts, and the other way round."""
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


def test_declared_errors_cover_ours_and_vllms():
    responses = generation_route(api.CompletionRequest, COMPLETION_SCHEMA)["responses"]
    assert set(responses) == {200, *GENERATION_ERRORS}
    jsonschema.validate(api.ApiError(400, "bad", param="prompt").body(), ERROR_SCHEMA)
    vllm_error = {"error": {"message": "The model `x` does not exist.", "type": "NotFoundError", "param": "model",
                            "code": 404}}
    jsonschema.validate(vllm_error, ERROR_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"error": "bad"}, ERROR_SCHEMA)


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"model": "m", "prompt": "abcdefgh", "max_tokens": 5, "n": 2}', (2, 10, "abcdefgh", False)),
    (b'{"model": "m", "prompt": [1, 2, 3], "stream": true}', (3, None, "", True)),
    (b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "abcd"}]}],'
     b' "max_completion_tokens": 7}', (1 + api.MESSAGE_OVERHEAD_TOKENS, 7, "abcd", False)),
    (b'not json', (2, None, "", False)),
])
def test_peek_reads_size_budget_and_stream_without_changing_the_body(body, expected):
    peek = api.peek_request(body)
    assert (peek.estimated_prompt_tokens, peek.max_new_tokens, peek.prompt_head, peek.stream) == expected
    assert peek.body == body


@pytest.mark.parametrize("priority", ["batch", 3])
def test_peek_takes_the_priority_out_of_the_body(priority):
    peek = api.peek_request(json.dumps({"model": "m", "prompt": "x", "priority": priority}).encode())
    assert peek.priority == priority and json.loads(peek.body) == {"model": "m", "prompt": "x"}


@pytest.mark.parametrize("priority", [True, 1.5, ["batch"]])
def test_peek_refuses_a_priority_that_is_neither_a_class_nor_an_integer(priority):
    with pytest.raises(api.ApiError) as refused:
        api.peek_request(json.dumps({"model": "m", "prompt": "x", "priority": priority}).encode())
    assert (refused.value.status, refused.value.param) == (400, "priority")


@pytest.mark.parametrize("previous, expected", [("resp_abc", "resp_abc"), (None, None), (7, None)])
def test_peek_reads_the_stored_response_a_responses_request_continues(previous, expected):
    body = {"model": "m", "input": "x", **({} if previous is None else {"previous_response_id": previous})}
    peek = api.peek_request(json.dumps(body).encode())
    assert peek.previous_response_id == expected and json.loads(peek.body) == body
