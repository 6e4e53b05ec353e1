"""The OpenAI-compatible API on the real app, through the official `openai` client."""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from openai import AsyncOpenAI
from router_helpers import EXACT, assert_leaving_client_aborts_its_engine_request

from serve_app.synthetic_model import JSON_WORDS

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
    assert_leaving_client_aborts_its_engine_request(base_url, model_name)


def test_error_event_shape_is_openai_json(base_url, model_name):
    response = httpx.post(f"{base_url}/v1/completions", json={"model": model_name, "prompt": PROMPT,
                                                              "max_tokens": 0}, timeout=30)
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert json.dumps(error)


def test_models_retrieve(client, model_name):
    model = client.models.retrieve(model_name)
    assert (model.id, model.object) == (model_name, "model")
    assert model.model_extra["max_model_len"] == 512
    with pytest.raises(Exception) as missing:
        client.models.retrieve("no-such-model")
    assert getattr(missing.value, "status_code", None) == 404


def test_load_counts_the_requests_this_ingress_holds(base_url, model_name):
    """`GET /load` as vLLM words it: a stream being read counts, and the count returns to 0 once it ends."""
    body = {"model": model_name, "prompt": PROMPT, "max_tokens": 480, "stream": True, **EXACT}
    with httpx.Client(timeout=60) as http:
        assert http.get(f"{base_url}/load").json() == {"server_load": 0}
        with http.stream("POST", f"{base_url}/v1/completions", json=body) as response:
            assert response.status_code == 200
            lines = response.iter_lines()  # kept: a closed line iterator closes the stream
            assert next(lines).startswith("data: ")
            assert http.get(f"{base_url}/load").json() == {"server_load": 1}
        for _ in range(40):
            if (load := http.get(f"{base_url}/load").json()) == {"server_load": 0}:
                break
            time.sleep(0.25)
        assert load == {"server_load": 0}


def test_version_and_tokenizer_info_come_from_the_replicas(base_url):
    import vllm

    assert httpx.get(f"{base_url}/version", timeout=30).json() == {"version": vllm.__version__}
    info = httpx.get(f"{base_url}/tokenizer_info", timeout=30)  # enabled in the test app's engine.frontend
    assert info.status_code == 200, info.text
    assert info.json()["tokenizer_class"]


CHAT = [{"role": "user", "content": PROMPT}]


def test_chat_logprobs(client, model_name):
    reply = client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=4, logprobs=True,
                                           top_logprobs=2, temperature=0, extra_body=EXACT)
    content = reply.choices[0].logprobs.content
    assert len(content) == 4
    assert all(len(token.top_logprobs) == 2 and token.logprob <= 0 for token in content)


def test_completion_logprobs_and_echo(client, model_name):
    reply = client.completions.create(model=model_name, prompt=PROMPT, max_tokens=3, logprobs=1, echo=True,
                                      temperature=0, extra_body=EXACT)
    choice = reply.choices[0]
    assert choice.text.startswith(PROMPT)
    assert len(choice.logprobs.tokens) == len(PROMPT.split()) + 3


def test_two_choices(client, model_name):
    reply = client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=3, n=2, temperature=1,
                                           seed=7, extra_body=EXACT)
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.usage.completion_tokens == 6


def test_structured_output_and_tools_are_applied(client, model_name):
    """The grammar reaches the engine: a random model says only JSON's tokens (the synthetic tokenizer's
    decoder puts a space between any two tokens, so a number of several digits is not valid JSON)."""
    plain = client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=12, temperature=0)
    assert plain.choices[0].message.content.split()[0] not in JSON_WORDS
    constrained = client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=12, temperature=0,
                                                 response_format={"type": "json_object"})
    assert constrained.choices[0].message.content.split()[0] == "{"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    shaped = client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=12, temperature=0,
                                            response_format={"type": "json_schema",
                                                             "json_schema": {"name": "s", "schema": schema}})
    assert shaped.choices[0].message.content.split()[:5] == ["{", '"', "a", '"', ":"]
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}
    named = client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=4, temperature=0,
                                           tools=[tool], tool_choice={"type": "function",
                                                                      "function": {"name": "lookup"}})
    call = named.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup" and call.function.arguments.split()[:3] == ["{", '"', "q"]


def test_streamed_chat_with_usage_and_request_time(client, model_name):
    import time

    before = int(time.time())
    stream = client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=5, stream=True,
                                            stream_options={"include_usage": True}, extra_body=EXACT)
    events = list(stream)
    assert events[-1].usage.completion_tokens == 5
    assert all(event.created >= before for event in events)  # the request's time, not the server's start
