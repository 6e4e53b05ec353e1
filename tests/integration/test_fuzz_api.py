"""Fuzz the HTTP API from its own /openapi.json (schemathesis): valid and invalid bodies for every
route; no 5xx, only declared status codes and content types, bodies that match the declared schemas,
every answer within a timeout; then the service still serves a normal completion."""
from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402  (hypothesis comes with schemathesis)
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,  # noqa: E402
                                               status_code_conformance)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = {"POST": 30, "GET": 4}  # per operation and generation mode; bounds the test at a few minutes on 2 CPUs
REQUEST_TIMEOUT_S = 60  # a hang fails the test (requests raises)
FUZZ_MAX_TOKENS = 4  # generation on the CPU is slow; longer outputs test nothing more


def _bound_generation(body: object, max_output_tokens: int) -> None:
    """Keep accepted requests short: a token budget the server would accept becomes FUZZ_MAX_TOKENS, and a
    chat without one gets it (its default is the rest of the context). Budgets the server refuses
    (zero, negative, past the limit, not an integer) are sent as generated."""
    if not isinstance(body, dict):
        return
    fields = [f for f in ("max_tokens", "max_completion_tokens") if f in body]
    for field in fields:
        value = body[field]
        if isinstance(value, int) and not isinstance(value, bool) and FUZZ_MAX_TOKENS < value <= max_output_tokens:
            body[field] = FUZZ_MAX_TOKENS
    if not fields and "messages" in body:
        body["max_tokens"] = FUZZ_MAX_TOKENS


@pytest.fixture(scope="module")
def api_schema(base_url, app_config):
    """The app's published schema, with `model`, `priority` and `n` narrowed to what this app serves, so that
    valid cases get past the model and class checks and reach the router and the engine; invalid ones
    (negative mode) still try other models and classes."""
    spec = httpx.get(f"{base_url}/openapi.json", timeout=30).raise_for_status().json()
    for path in ("/v1/completions", "/v1/chat/completions"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        body["properties"]["model"] = {"type": "string", "enum": [app_config.model.served_name]}
        body["properties"]["n"] = {"const": 1}  # vLLM refuses several choices when sampling greedily
        body["properties"]["priority"] = {"anyOf": [{"type": "string", "enum": [c.name for c in
                                                                                app_config.priority_classes]},
                                                    {"type": "null"}]}
    return schemathesis.openapi.from_dict(spec)


def _operations(api_schema):
    return [result.ok() for result in api_schema.get_all_operations()]


def test_openapi_declares_request_bodies_and_errors(api_schema):
    operations = {op.label: op for op in _operations(api_schema)}
    for label in ("POST /v1/completions", "POST /v1/chat/completions"):
        definition = operations[label].definition.raw
        body = definition["requestBody"]["content"]["application/json"]["schema"]
        assert "model" in body["required"]
        assert {"200", "400", "401", "403", "404", "413", "429", "503"} <= set(definition["responses"])


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_fuzz_every_operation(api_schema, base_url, app_config, mode):
    max_output_tokens = app_config.http.max_output_tokens or app_config.engine.max_model_len
    statuses: dict[str, list[int]] = {}
    for operation in _operations(api_schema):
        if mode is GenerationMode.NEGATIVE and not len(operation.body) and not len(operation.query):
            continue  # a GET without parameters has nothing to make invalid

        @settings(max_examples=EXAMPLES[operation.method.upper()], derandomize=True, deadline=None,
                  database=None, suppress_health_check=list(HealthCheck), print_blob=False)
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case):
            _bound_generation(case.body, max_output_tokens)
            response = case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=REQUEST_TIMEOUT_S)
            statuses.setdefault(operation.label, []).append(response.status_code)

        fuzz()
    print({label: sorted(set(codes)) for label, codes in statuses.items()})
    if mode is GenerationMode.POSITIVE:  # valid cases did reach the engine, not only the request checks
        for label in ("POST /v1/completions", "POST /v1/chat/completions"):
            assert statuses[label].count(200) >= 3, (label, statuses[label])


def test_serves_normally_after_fuzzing(client, model_name, base_url):
    reply = client.completions.create(model=model_name, prompt="t10 t11", max_tokens=3,
                                      extra_body={"ignore_eos": True})
    assert reply.usage.completion_tokens == 3
    assert httpx.get(f"{base_url}/health", timeout=30).status_code == 200
