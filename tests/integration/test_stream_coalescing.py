"""`stream_coalesce_s`: a class that allows it gets its events (vLLM's, one per token, all of them) in
fewer, larger writes: bursts at most every `stream_coalesce_s`."""
from __future__ import annotations

import json
import time

import httpx
import pytest

pytestmark = pytest.mark.integration
TOKENS = 48


BURST_GAP_S = 0.05  # events closer than this arrived in one write (a write is read at once on loopback)


def _stream_events(base_url: str, model: str, priority: str) -> tuple[list[str], float, int]:
    """The text of each content event of one streamed completion, the stream's duration and the number
    of bursts the events arrived in."""
    body = {"model": model, "prompt": "coalesce", "max_tokens": TOKENS, "ignore_eos": True, "stream": True,
            "priority": priority, "stream_options": {"include_usage": True}, "temperature": 0}
    texts, usage, arrivals = [], None, []
    started = time.monotonic()
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            arrivals.append(time.monotonic())
            event = json.loads(line[len("data: "):])
            if event.get("usage"):
                usage = event["usage"]
            elif event["choices"] and event["choices"][0]["text"]:
                texts.append(event["choices"][0]["text"])
    assert usage["completion_tokens"] == TOKENS
    bursts = 1 + sum(1 for earlier, later in zip(arrivals, arrivals[1:]) if later - earlier > BURST_GAP_S)
    return texts, time.monotonic() - started, bursts


def test_batch_class_streams_in_coalesced_writes_with_every_token(base_url, model_name):
    standard, _, _ = _stream_events(base_url, model_name, "standard")
    batch, duration, bursts = _stream_events(base_url, model_name, "batch")
    # Greedy decoding: the same text either way (vLLM may put two tokens in one event when the engine
    # was ahead), for the coalescing class in at most one burst for the first token plus one per 0.3 s.
    assert "".join(batch) == "".join(standard)
    assert bursts <= 2 + duration / 0.3, (bursts, duration)
