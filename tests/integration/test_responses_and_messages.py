"""OpenAI's Responses API, Anthropic's Messages API and the tokenizer routes on the real app (all served by
vLLM's own layer in the replica, `vllm serve`'s routes), through the official `openai` and `anthropic` clients:
generation through the priority queue like chat, our own errors in each API's shape."""
from __future__ import annotations

import anthropic
import httpx
import pytest
from openai import OpenAI
from router_helpers import router_stats, wait_until_idle

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def claude(base_url):
    # The Anthropic client sends its key as `x-api-key`, which the intake reads like a bearer token.
    with anthropic.Anthropic(base_url=base_url, api_key="key-gold", max_retries=0, timeout=120) as c:
        yield c


def _served(base_url: str, class_name: str) -> int:
    return wait_until_idle(base_url)["classes"][class_name]["served"]


def test_responses_api_answers_through_the_queue_in_the_asked_class(base_url, model_name):
    before = _served(base_url, "interactive")
    with OpenAI(base_url=f"{base_url}/v1", api_key="key-gold", max_retries=0, timeout=120) as client:
        reply = client.responses.create(model=model_name, input="t10 t11 t12", max_output_tokens=6,
                                        extra_body={"priority": "interactive"})
    # Random weights rarely stop early: the output budget usually ends it, which OpenAI calls incomplete.
    assert reply.status == "completed" or reply.incomplete_details.reason == "max_output_tokens"
    assert reply.output_text
    assert 1 <= reply.usage.output_tokens <= 6
    assert _served(base_url, "interactive") == before + 1


def test_messages_api_answers_whole_and_streamed_through_the_queue(base_url, model_name, claude):
    before = _served(base_url, "interactive")
    reply = claude.messages.create(model=model_name, max_tokens=6, messages=[{"role": "user", "content": "t10 t11"}],
                                   extra_headers={"x-priority": "interactive"})
    assert reply.type == "message" and reply.role == "assistant" and reply.content[0].type == "text"
    assert 1 <= reply.usage.output_tokens <= 6 and reply.usage.input_tokens > 0
    with claude.messages.stream(model=model_name, max_tokens=6, messages=[{"role": "user", "content": "t12"}],
                                extra_headers={"x-priority": "interactive"}) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "content_block_delta" in kinds
    assert 1 <= final.usage.output_tokens <= 6
    assert _served(base_url, "interactive") == before + 2


def test_messages_api_gets_our_errors_in_anthropics_shape(base_url, model_name, claude):
    with pytest.raises(anthropic.BadRequestError) as unknown_class:
        claude.messages.create(model=model_name, max_tokens=4, messages=[{"role": "user", "content": "t10"}],
                               extra_headers={"x-priority": "platinum"})
    assert unknown_class.value.body == {"type": "error", "error": {
        "type": "invalid_request_error", "message": unknown_class.value.body["error"]["message"]}}
    assert "platinum" in unknown_class.value.body["error"]["message"]
    response = httpx.post(f"{base_url}/v1/messages", timeout=30, headers={"x-api-key": "wrong"},
                          json={"model": model_name, "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 401 and response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "authentication_error"
    # vLLM's own refusals on this route were already in Anthropic's shape; ours now match them.
    assert router_stats(base_url)["classes"]["interactive"]["queued"] == 0


def test_messages_count_tokens_is_answered_by_a_replica(base_url, model_name, claude):
    counted = claude.messages.count_tokens(model=model_name, messages=[{"role": "user", "content": "t10 t11 t12"}])
    assert counted.input_tokens > 0
    refused = httpx.post(f"{base_url}/v1/messages/count_tokens", timeout=30, headers={"x-api-key": "wrong"},
                         json={"model": model_name, "messages": [{"role": "user", "content": "t10"}]})
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"


def test_tokenize_and_detokenize_round_trip_through_a_replica(base_url, model_name):
    gold = {"authorization": "Bearer key-gold"}
    tokens = httpx.post(f"{base_url}/tokenize", timeout=30, headers=gold, json={
        "model": model_name, "prompt": "t10 t11 t12", "add_special_tokens": False}).json()["tokens"]
    assert len(tokens) == 3  # the synthetic tokenizer's words are one token each
    text = httpx.post(f"{base_url}/detokenize", timeout=30, headers=gold,
                      json={"model": model_name, "tokens": tokens}).json()["prompt"]
    assert text.split() == ["t10", "t11", "t12"]


def test_sagemaker_invocations_and_ping_as_vllm_serve_has_them(base_url, model_name):
    """`/invocations` takes a chat or a completion body (vLLM tells them apart) through the queue; `/ping`
    answers as `/health` does."""
    before = _served(base_url, "interactive")
    headers = {"authorization": "Bearer key-gold", "x-priority": "interactive"}
    chat = httpx.post(f"{base_url}/invocations", timeout=120, headers=headers, json={
        "model": model_name, "max_tokens": 4, "messages": [{"role": "user", "content": "t10 t11"}]})
    assert chat.status_code == 200 and chat.json()["object"] == "chat.completion"
    completion = httpx.post(f"{base_url}/invocations", timeout=120, headers=headers, json={
        "model": model_name, "max_tokens": 4, "prompt": "t10 t11"})
    assert completion.status_code == 200 and completion.json()["object"] == "text_completion"
    assert _served(base_url, "interactive") == before + 2
    for method in ("GET", "POST"):
        ping = httpx.request(method, f"{base_url}/ping", timeout=30)
        assert ping.status_code == 200 and ping.json()["status"] == "ok"
