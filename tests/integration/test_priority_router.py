"""The priority router on the real app (Ray Serve + vLLM CPU engine): keys, ceilings, rate limits,
admission control under a flood, and nothing lost."""
from __future__ import annotations

import asyncio
import json
import os
import time

import httpx
import pytest
from router_helpers import Outcome, auth, completion, fresh_side_app, router_stats, wait_until_idle

pytestmark = pytest.mark.integration

# What an interactive request may take to its first token while a batch flood several times the
# engine's capacity is queued and running (measured on a 2-core machine: 0.14-0.21 s; without
# priority it would wait behind the queued flood, seconds).
INTERACTIVE_TTFT_BOUND_S = 1.0
FLOOD_REQUESTS = 150
FLOOD_MAX_TOKENS = 48
WARMUP_REQUESTS = 24  # admission refuses on predicted wait only once it has measured completions


@pytest.fixture(scope="module")
def flood_url(app_config, base_url):  # base_url: the shared app runs Ray Serve on its HTTP port
    """A fresh app for the flood: after the rest of the suite the shared app's windows have grown with
    its traffic, and whether 150 requests still overflow them would depend on what ran before."""
    if os.environ.get("LLMSERVE_TEST_URL"):  # an app started by hand: no Ray Serve in this process
        yield base_url
        return
    yield from fresh_side_app(app_config, "flood")


def test_unknown_key_is_401(base_url, model_name):
    response = httpx.post(f"{base_url}/v1/completions", json=completion(model_name), headers=auth("nope"), timeout=30)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert "nope" not in response.text


def test_unknown_priority_class_is_400(base_url, model_name):
    response = httpx.post(f"{base_url}/v1/completions", json=completion(model_name, priority="platinum"),
                          headers=auth("key-gold"), timeout=30)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "priority"


def test_vllm_integer_priority_runs_in_the_class_at_that_level(base_url, model_name):
    """A client written for `vllm serve --scheduling-policy priority` sends integers (lower first)."""
    before = router_stats(base_url)["classes"]
    response = httpx.post(f"{base_url}/v1/completions", json=completion(model_name, priority=99),
                          headers=auth("key-gold"), timeout=60)
    assert response.status_code == 200, response.text
    after = wait_until_idle(base_url)["classes"]
    assert after["batch"]["served"] == before["batch"]["served"] + 1  # past the last level: the lowest class
    above = httpx.post(f"{base_url}/v1/completions", json=completion(model_name, priority=0),
                       headers=auth("key-bronze"), timeout=30)
    assert above.status_code == 403 and above.json()["error"]["code"] == "priority_above_ceiling"


@pytest.mark.parametrize("how", ["body", "header"])
def test_a_key_cannot_exceed_its_ceiling(base_url, model_name, how):
    body = completion(model_name, priority="interactive") if how == "body" else completion(model_name)
    headers = {**auth("key-bronze"), **({"x-priority": "interactive"} if how == "header" else {})}
    response = httpx.post(f"{base_url}/v1/completions", json=body, headers=headers, timeout=30)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "priority_above_ceiling"


def test_default_class_is_lowered_to_the_ceiling(base_url, model_name):
    before = router_stats(base_url)["classes"]
    response = httpx.post(f"{base_url}/v1/completions", json=completion(model_name), headers=auth("key-bronze"),
                          timeout=60)
    assert response.status_code == 200
    # The router counts a request once its replica call returns, just after the last chunk.
    after = wait_until_idle(base_url)["classes"]
    # The config's default (standard) is above bronze's ceiling: it ran as batch.
    assert after["batch"]["served"] == before["batch"]["served"] + 1
    assert after["standard"]["served"] == before["standard"]["served"]


def test_rate_limited_key_gets_429_with_retry_after(base_url, model_name):
    statuses, retry_after = [], None
    with httpx.Client(timeout=60) as http:
        for _ in range(5):  # burst 2 at 1 request/s: sent back to back, some must be refused
            response = http.post(f"{base_url}/v1/completions", json=completion(model_name, max_tokens=1),
                                 headers=auth("key-limited"))
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.json()["error"]["code"] == "rate_limit_exceeded"
                retry_after = int(response.headers["retry-after"])
    assert statuses[:2] == [200, 200]
    assert 429 in statuses
    assert retry_after is not None and retry_after >= 1


async def until_router_has_seen(base_url: str, before: dict, count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=30) as http:
        while time.monotonic() < deadline:
            batch = (await http.get(f"{base_url}/v1/router/stats")).json()["classes"]["batch"]
            seen = sum(batch[k] - before["batch"][k] for k in ("admitted", "refused_overload"))
            if seen >= count:
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"the router saw {seen} of {count} flood requests in {timeout_s}s")


async def stream_one(http: httpx.AsyncClient, url: str, body: dict, headers: dict) -> Outcome:
    started = time.monotonic()
    async with http.stream("POST", url, json={**body, "stream": True}, headers=headers) as response:
        if response.status_code != 200:
            payload = json.loads(await response.aread())
            return Outcome(response.status_code, retry_after=response.headers.get("retry-after"),
                           error_code=payload["error"]["code"])
        outcome = Outcome(200)
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                outcome.done = True
                break
            event = json.loads(data)
            assert "error" not in event, event
            for choice in event["choices"]:
                if choice["text"] and outcome.ttft_s is None:
                    outcome.ttft_s = time.monotonic() - started
                outcome.tokens += len(choice["text"].split())
                outcome.finish = choice["finish_reason"] or outcome.finish
        return outcome


def test_interactive_stays_fast_under_a_batch_flood_and_nothing_is_lost(flood_url, model_name):
    base_url = flood_url
    wait_until_idle(base_url)
    before = router_stats(base_url)["classes"]
    url = f"{base_url}/v1/completions"

    async def run() -> tuple[list[Outcome], list[Outcome]]:
        limits = httpx.Limits(max_connections=FLOOD_REQUESTS + 20, max_keepalive_connections=FLOOD_REQUESTS + 20)
        async with httpx.AsyncClient(timeout=180, limits=limits) as http:
            warmup = []
            for _ in range(WARMUP_REQUESTS // 4):  # four at a time: within the window, never refused
                warmup += await asyncio.gather(*(stream_one(http, url, completion(
                    model_name, max_tokens=8, priority="batch"), auth("key-bronze")) for _ in range(4)))
            assert all(o.status == 200 for o in warmup), warmup
            flood = [asyncio.create_task(stream_one(http, url, completion(
                model_name, prompt=f"t{100 + i} t{200 + i} t{300 + i}", max_tokens=FLOOD_MAX_TOKENS,
                priority="batch"), auth("key-bronze"))) for i in range(FLOOD_REQUESTS)]
            # Measure once the router has taken in the whole flood: on a 2-core machine the HTTP layer
            # digesting 150 simultaneous connections would otherwise be what the probe waits for.
            await until_router_has_seen(base_url, before, FLOOD_REQUESTS + WARMUP_REQUESTS)
            interactive = []
            for i in range(5):
                interactive.append(await stream_one(http, url, completion(model_name, max_tokens=4,
                                                                          priority="interactive"), auth("key-gold")))
                await asyncio.sleep(0.2)
            return await asyncio.gather(*flood), interactive

    flood, interactive = asyncio.run(run())

    assert all(o.status == 200 and o.done and o.tokens == 4 for o in interactive), interactive
    slowest = max(o.ttft_s for o in interactive)
    assert slowest <= INTERACTIVE_TTFT_BOUND_S, f"interactive TTFT {slowest:.2f}s under the flood"

    served = [o for o in flood if o.status == 200]
    refused = [o for o in flood if o.status in (429, 503)]
    # Nothing lost: every flood request was either served in full or refused with Retry-After.
    assert len(served) + len(refused) == FLOOD_REQUESTS, [o for o in flood if o.status not in (200, 429, 503)]
    assert all(o.done and o.finish == "length" and o.tokens == FLOOD_MAX_TOKENS for o in served)
    assert all(o.retry_after is not None and int(o.retry_after) >= 1 for o in refused)
    assert any(o.status == 429 and o.error_code == "overloaded" for o in refused), "admission never refused"
    assert served, "admission refused the whole flood"

    after = wait_until_idle(base_url)["classes"]
    batch = {key: after["batch"][key] - before["batch"][key] for key in
             ("admitted", "refused_overload", "expired", "served", "failed", "cancelled")}
    assert batch["admitted"] + batch["refused_overload"] == FLOOD_REQUESTS + WARMUP_REQUESTS
    assert batch["served"] == len(served) + WARMUP_REQUESTS
    assert batch["served"] + batch["expired"] == batch["admitted"]
    assert batch["failed"] == 0 and batch["cancelled"] == 0
    assert batch["refused_overload"] + batch["expired"] == len(refused)
    print(f"flood: {len(served)} served, {len(refused)} refused; interactive TTFT max {slowest:.3f}s")


def test_router_stats_report_windows_within_the_controller_cap(base_url, model_name):
    response = httpx.post(f"{base_url}/v1/completions", json=completion(model_name, max_tokens=8),
                          headers=auth("key-gold"), timeout=60)  # one more TPOT sample for the window
    assert response.status_code == 200
    stats = wait_until_idle(base_url)
    assert set(stats["classes"]) == {"interactive", "standard", "batch"}
    [replica] = stats["replicas"].values()
    assert 1 <= replica["window"] <= replica["window_cap"]
    status = httpx.get(f"{base_url}/v1/controller/status", timeout=30).json()
    [entry] = status.values()
    assert replica["controller_cap"] == entry["window"]
    # The window plus the top class's reserved headroom stays within the controller's cap.
    assert replica["window_cap"] + max(1, -(-replica["window_cap"] // 10)) <= max(2, replica["controller_cap"])
    # What steers the window is reported with it: its latency averages, fed by the requests served so far.
    state = replica["window_state"]
    assert isinstance(state["moves"], dict) and state["tpot_goal_s"] > 0
    assert state["ttft_ewma_s"] > 0
    # The replica sends its engine's recent inter-token time with each request, and the window takes it.
    assert state["tpot_samples"].get("engine", 0) > 0
