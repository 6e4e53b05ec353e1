"""The OpenAI-compatible API on the real app, through the official `openai` client."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from openai import AsyncOpenAI
from router_helpers import EXACT

pytestmark = pytest.mark.integration

PROMPT = "t10 t11 t12 t13 t14"


def test_models_lists_the_served_model(client, model_name):
    assert [m.id for m in client.models.list().data] == [model_name]


def test_health_asks_the_engine(base_url):
    body = httpx.get(f"{base_url}/health", timeout=30).json()
    assert body["status"] == "ok"
    assert body["replica"]["engine_unfinished_requests"] == 0


def test_completion_counts_tokens(client, model_name, tokenizer):
    reply = client.completions.create(model=model_name, prompt=PROMPT, max_tokens=12,
                                      extra_body=EXACT)
    assert reply.usage.prompt_tokens == len(tokenizer(PROMPT).input_ids)
    assert reply.usage.completion_tokens == 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 12
    assert reply.choices[0].finish_reason == "length"
    # The word-level tokenizer round-trips, so the text re-encodes to exactly the generated count.
    assert len(tokenizer(reply.choices[0].text).input_ids) == 12


def test_completion_accepts_token_ids(client, model_name):
    reply = client.completions.create(model=model_name, prompt=[10, 11, 12], max_tokens=4,
                                      extra_body=EXACT)
    assert reply.usage.prompt_tokens == 3
    assert reply.usage.completion_tokens == 4


def test_streamed_completion_matches_usage(client, model_name, tokenizer):
    stream = client.completions.create(model=model_name, prompt=PROMPT, max_tokens=20, stream=True,
                                       stream_options={"include_usage": True}, extra_body=EXACT)
    texts, finish, usage = [], None, None
    for event in stream:
        if event.usage:
            usage = event.usage
        for choice in event.choices:
            texts.append(choice.text)
            finish = choice.finish_reason or finish
    assert finish == "length"
    assert usage.completion_tokens == 20
    assert usage.prompt_tokens == len(tokenizer(PROMPT).input_ids)
    assert len(tokenizer("".join(texts)).input_ids) == 20
    assert len(texts) > 1, "tokens must arrive as a stream, not one block"


def test_chat_completion(client, model_name, tokenizer):
    messages = [{"role": "system", "content": "t20"}, {"role": "user", "content": PROMPT}]
    reply = client.chat.completions.create(model=model_name, messages=messages, max_tokens=8,
                                           extra_body=EXACT)
    expected_prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert reply.usage.prompt_tokens == len(tokenizer(expected_prompt, add_special_tokens=False).input_ids)
    assert reply.usage.completion_tokens == 8
    assert reply.choices[0].message.role == "assistant"
    assert len(tokenizer(reply.choices[0].message.content).input_ids) == 8


def test_streamed_chat_completion(client, model_name):
    stream = client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": PROMPT}],
                                            max_tokens=10, stream=True, stream_options={"include_usage": True},
                                            extra_body=EXACT)
    roles, content, finish, usage = [], [], None, None
    for event in stream:
        usage = event.usage or usage
        for choice in event.choices:
            roles.append(choice.delta.role)
            content.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert roles[0] == "assistant"
    assert finish == "length"
    assert usage.completion_tokens == 10
    assert len("".join(content).split()) == 10


def test_sixteen_concurrent_requests_all_answered(base_url, model_name):
    async def run() -> list:
        async with AsyncOpenAI(base_url=f"{base_url}/v1", api_key="key-gold", max_retries=0, timeout=300) as aclient:
            calls = [aclient.completions.create(model=model_name, prompt=f"t{100 + i} t{200 + i}", max_tokens=8 + i,
                                                extra_body=EXACT) for i in range(16)]
            return await asyncio.gather(*calls)

    replies = asyncio.run(run())
    assert [r.usage.completion_tokens for r in replies] == [8 + i for i in range(16)]
    assert all(r.usage.prompt_tokens == 2 for r in replies)
    assert len({r.id for r in replies}) == 16


def test_client_disconnect_aborts_engine_request(base_url, model_name):
    body = {"model": model_name, "prompt": PROMPT, "max_tokens": 480, "stream": True, "ignore_eos": True, "skip_special_tokens": False}
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", f"{base_url}/v1/completions", json=body) as response:
            assert response.status_code == 200
            events = 0
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events += 1
                if events >= 3:
                    break
    # 480 tokens take the CPU engine many seconds; an aborted request is gone well before that.
    deadline_polls = 40
    for _ in range(deadline_polls):
        replica = httpx.get(f"{base_url}/health", timeout=30).json()["replica"]
        if replica["engine_unfinished_requests"] == 0 and replica["in_flight"] == 0:
            break
        asyncio.run(asyncio.sleep(0.25))
    assert replica["engine_unfinished_requests"] == 0
    assert replica["in_flight"] == 0
    assert replica["num_running"] <= 1  # the last recorded step may still show it; the engine no longer does


def test_error_event_shape_is_openai_json(base_url, model_name):
    response = httpx.post(f"{base_url}/v1/completions", json={"model": model_name, "prompt": PROMPT,
                                                              "max_tokens": 0}, timeout=30)
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert json.dumps(error)
