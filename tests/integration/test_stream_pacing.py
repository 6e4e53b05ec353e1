"""Stream pacing through the app (`http.stream_writes_per_s`: 100 in the test app): one ingress's writes
per second shared out over its sending streams. A dozen concurrent streams each get their tokens in
fewer writes than tokens, every token still there, and `/v1/router/stats` shows the pacing in force."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from router_helpers import EXACT, router_stats, wait_until_idle

pytestmark = pytest.mark.integration
STREAMS = 12
TOKENS = 48


async def _stream(client: httpx.AsyncClient, base_url: str, model: str) -> int:
    """One streamed completion's completion tokens (from its usage), checked to end with [DONE]."""
    body = {"model": model, "prompt": "pace", "max_tokens": TOKENS, "stream": True, "temperature": 0,
            "stream_options": {"include_usage": True}, **EXACT}
    usage, done = None, False
    async with client.stream("POST", f"{base_url}/v1/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: {") and (event := json.loads(line[len("data: "):])).get("usage"):
                usage = event["usage"]
    assert done
    return usage["completion_tokens"]


def test_concurrent_streams_share_the_writes_budget_with_every_token(base_url, model_name):
    wait_until_idle(base_url)
    writes_before = router_stats(base_url)["ingress"]["streams"]["writes"]

    async def main() -> tuple[list[int], list[dict]]:
        seen: list[dict] = []
        async with httpx.AsyncClient(timeout=120) as client:
            streams = asyncio.gather(*(_stream(client, base_url, model_name) for _ in range(STREAMS)))
            while not streams.done():
                seen.append((await client.get(f"{base_url}/v1/router/stats")).json()["ingress"]["streams"])
                await asyncio.sleep(0.1)
            return await streams, seen

    tokens, seen = asyncio.run(main())
    assert tokens == [TOKENS] * STREAMS
    busiest = max(seen, key=lambda state: state["sending"])
    # 100 writes/s over n sending streams: a write per n/100 s each, at most 4 x the class's 0.2 s TPOT.
    assert busiest["sending"] >= 4, seen
    assert busiest["min_gap_s"]["standard"] == pytest.approx(min(busiest["sending"] / 100, 0.8)), busiest
    after = wait_until_idle(base_url)["ingress"]["streams"]
    assert after["sending"] == 0 and after["min_gap_s"]["standard"] == 0.0
    assert after["writes"] - writes_before < STREAMS * TOKENS / 2, (writes_before, after)
