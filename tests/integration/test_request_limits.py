"""Request size limits (`http.*` in conftest: 400 prompt tokens, 480 output tokens, 64 messages, 3 stop
strings, 1 MB body) answered with OpenAI-shaped errors naming the field; requests at a limit are served."""
from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration


def _post(base_url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{base_url}{path}", json=body, timeout=120)


def _error(response: httpx.Response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_prompt_token_limit(base_url, model_name, app_config):
    limit = app_config.http.max_prompt_tokens
    at_limit = _post(base_url, "/v1/completions", {"model": model_name, "prompt": [10] * limit, "max_tokens": 1})
    assert at_limit.status_code == 200, at_limit.text
    assert at_limit.json()["usage"]["prompt_tokens"] == limit
    error = _error(_post(base_url, "/v1/completions", {"model": model_name, "prompt": [10] * (limit + 1),
                                                       "max_tokens": 1}))
    assert error["param"] == "prompt" and "max_prompt_tokens" in error["message"]


def test_chat_prompt_limit_counts_the_templated_prompt(base_url, model_name, app_config):
    # `limit` one-token words plus the chat template's tokens: over the configured limit, under the context.
    limit = app_config.http.max_prompt_tokens
    messages = [{"role": "user", "content": " ".join(f"t{10 + i}" for i in range(limit))}]
    error = _error(_post(base_url, "/v1/chat/completions", {"model": model_name, "messages": messages,
                                                            "max_tokens": 1}))
    assert error["param"] == "messages" and "max_prompt_tokens" in error["message"]
    # SageMaker's /invocations takes the same chat body: the error names its prompt the same way.
    error = _error(_post(base_url, "/invocations", {"model": model_name, "messages": messages, "max_tokens": 1}))
    assert error["param"] == "messages" and "max_prompt_tokens" in error["message"]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_output_token_limit(base_url, model_name, app_config, field):
    limit = app_config.http.max_output_tokens
    error = _error(_post(base_url, "/v1/chat/completions", {
        "model": model_name, "messages": [{"role": "user", "content": "t10"}], field: limit + 1}))
    assert (error["param"], error["code"]) == (field, "max_tokens_too_large")


def test_output_limit_caps_a_request_that_names_no_budget(base_url, model_name, app_config):
    """vLLM's default chat budget is the rest of the context; the server's cap replaces it."""
    reply = _post(base_url, "/v1/chat/completions", {"model": model_name, "ignore_eos": True,
                                                     "messages": [{"role": "user", "content": "t10"}]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] == app_config.http.max_output_tokens


def test_message_count_limit(base_url, model_name, app_config):
    messages = [{"role": "user", "content": "t10"}] * (app_config.http.max_messages + 1)
    error = _error(_post(base_url, "/v1/chat/completions", {"model": model_name, "messages": messages,
                                                            "max_tokens": 1}))
    assert (error["param"], error["code"]) == ("messages", "too_many_messages")


def test_stop_sequence_limit(base_url, model_name, app_config):
    limit = app_config.http.max_stop_sequences
    at_limit = _post(base_url, "/v1/completions", {"model": model_name, "prompt": "t10", "max_tokens": 2,
                                                   "stop": [f"x{i}" for i in range(limit)]})
    assert at_limit.status_code == 200, at_limit.text
    error = _error(_post(base_url, "/v1/completions", {"model": model_name, "prompt": "t10", "max_tokens": 2,
                                                       "stop": [f"x{i}" for i in range(limit + 1)]}))
    assert (error["param"], error["code"]) == ("stop", "too_many_stop_sequences")


def test_body_size_limit(base_url, model_name, app_config):
    prompt = "t10 " * (app_config.http.max_body_bytes // 4 + 1)
    error = _error(_post(base_url, "/v1/completions", {"model": model_name, "prompt": prompt}), status=413)
    assert error["code"] == "body_too_large"


def test_still_serves_with_a_seed_at_the_int64_edge(base_url, model_name):
    reply = _post(base_url, "/v1/completions", {"model": model_name, "prompt": "t10", "max_tokens": 2,
                                                "seed": 2**63 - 1})
    assert reply.status_code == 200, reply.text
