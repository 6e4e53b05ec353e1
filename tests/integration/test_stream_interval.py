"""`engine.stream_interval` (default 8) through the app: the first token comes alone, then events of up
to 8 tokens, and the streamed text and tokens are those of the same request answered whole. Runs on the
faults app, which keeps the product's default (the shared app streams a token per event)."""
from __future__ import annotations

import json

import httpx
import pytest
from fault_helpers import wait_for_routable

from serve_app.config import EngineSettings

pytestmark = pytest.mark.integration
TOKENS = 40
INTERVAL = EngineSettings.model_fields["stream_interval"].default


def _body(model: str, stream: bool) -> dict:
    return {"model": model, "prompt": "tokens per event", "max_tokens": TOKENS, "ignore_eos": True,
            "temperature": 0, "logprobs": 0, "stream": stream, "priority": "standard"}


def test_streamed_events_carry_up_to_the_interval_with_the_first_token_alone(faults_url, model_name):
    wait_for_routable(faults_url, 2)
    whole = httpx.post(f"{faults_url}/v1/completions", json=_body(model_name, False), timeout=120)
    assert whole.status_code == 200, whole.text
    whole_choice = whole.json()["choices"][0]
    per_event: list[list[str]] = []
    text = ""
    with httpx.stream("POST", f"{faults_url}/v1/completions", json=_body(model_name, True), timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            choice = json.loads(line[len("data: "):])["choices"][0]
            if choice["logprobs"] and choice["logprobs"]["tokens"]:
                per_event.append(choice["logprobs"]["tokens"])
                text += choice["text"]
    sizes = [len(tokens) for tokens in per_event]
    assert sum(sizes) == TOKENS and sizes[0] == 1, sizes
    assert max(sizes) <= INTERVAL and len(sizes) < TOKENS / 2, sizes  # not an event per token
    assert [t for tokens in per_event for t in tokens] == whole_choice["logprobs"]["tokens"]
    assert text == whole_choice["text"]
