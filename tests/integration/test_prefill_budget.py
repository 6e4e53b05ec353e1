"""`router.lower_class_prefill_tokens` through the real app: while a top-class stream runs, lower-class prompts
start one at a time (the budget is smaller than one prompt), each as soon as the one before it has its first
token, not when it ends; every request is served and the room is all given back."""
from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest
from router_helpers import EXACT, auth, fresh_side_app, router_stats, wait_until_idle

pytestmark = pytest.mark.integration

LOWER_REQUESTS = 4
LOWER_MAX_TOKENS = 300  # seconds of decoding on the CPU: far longer than a prefill and its first token
PROMPT = " ".join(f"t{i}" for i in range(10, 40))  # ~30 tokens: more than the budget, so one at a time


@pytest.fixture(scope="module")
def prefill_url(app_config, base_url):  # base_url: the shared app runs Ray Serve on its HTTP port
    if os.environ.get("LLMSERVE_TEST_URL"):
        pytest.skip("needs a fresh app of its own")
    router = app_config.router.model_copy(update={"lower_class_prefill_tokens": 8, "initial_window": 16})
    yield from fresh_side_app(app_config.model_copy(update={"router": router}), "prefill")


async def _stream(http: httpx.AsyncClient, url: str, body: dict, headers: dict) -> dict:
    started = time.monotonic()
    ttft, events = None, 0
    async with http.stream("POST", url, json=body, headers=headers) as response:
        status = response.status_code
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                events += 1
                ttft = ttft if ttft is not None else time.monotonic() - started
    return {"status": status, "ttft_s": ttft, "duration_s": time.monotonic() - started, "events": events}


def test_lower_prompts_start_one_by_one_at_first_tokens_while_the_top_class_streams(prefill_url, model_name):
    wait_until_idle(prefill_url)
    url = f"{prefill_url}/v1/completions"

    async def scenario():
        async with httpx.AsyncClient(timeout=300) as http:
            top = asyncio.create_task(_stream(http, url, {
                "model": model_name, "prompt": "t1 t2 t3", "max_tokens": 400, "stream": True,
                "priority": "interactive", **EXACT}, auth("key-gold")))
            while not router_stats(prefill_url)["classes"]["interactive"]["running"]:
                await asyncio.sleep(0.05)
            lower = await asyncio.gather(*(_stream(http, url, {
                "model": model_name, "prompt": PROMPT, "max_tokens": LOWER_MAX_TOKENS, "stream": True, **EXACT}, {})
                for _ in range(LOWER_REQUESTS)))
            return await top, lower

    top, lower = asyncio.run(scenario())
    stats = wait_until_idle(prefill_url)
    assert top["status"] == 200 and all(r["status"] == 200 and r["events"] >= 1 for r in lower), (top, lower)
    # The budget held lower-class starts: more than one was ready while another prompt was prefilling.
    assert stats["prefill_holds"] >= 1, stats
    # Each started at the previous one's first token: the last first token came before any of them ended
    # (the room freed only at ends would have put it after at least one whole answer).
    assert max(r["ttft_s"] for r in lower) < min(r["duration_s"] for r in lower), lower
    assert all(replica["prefilling_tokens"] == 0 for replica in stats["replicas"].values()), stats["replicas"]
