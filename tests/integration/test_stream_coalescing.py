"""`stream_coalesce_s`: a class that allows it gets its tokens in fewer, larger SSE events (all of them)."""
from __future__ import annotations

import json
import time

import httpx
import pytest

pytestmark = pytest.mark.integration
TOKENS = 48


def _stream_events(base_url: str, model: str, priority: str) -> tuple[list[str], float]:
    """The text of each content event of one streamed completion, and the stream's duration."""
    body = {"model": model, "prompt": "coalesce", "max_tokens": TOKENS, "ignore_eos": True, "stream": True,
            "priority": priority, "stream_options": {"include_usage": True}, "temperature": 0}
    texts, usage = [], None
    started = time.monotonic()
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[len("data: "):])
            if event.get("usage"):
                usage = event["usage"]
            elif event["choices"] and event["choices"][0]["text"]:
                texts.append(event["choices"][0]["text"])
    assert usage["completion_tokens"] == TOKENS
    return texts, time.monotonic() - started


def test_batch_class_streams_in_coalesced_events_with_every_token(base_url, model_name):
    standard, _ = _stream_events(base_url, model_name, "standard")
    batch, duration = _stream_events(base_url, model_name, "batch")
    # Greedy decoding: the same text either way, in fewer events for the coalescing class, at most
    # one for the first token plus one per 0.3 s of the stream.
    assert "".join(batch) == "".join(standard)
    assert len(batch) <= 2 + duration / 0.3
    assert len(batch) < len(standard)
