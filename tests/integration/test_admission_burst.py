"""A burst far beyond capacity on a fresh app: refusals come at once (429 with Retry-After, decided at
the ingress's door or by the router on arrival), never after waiting, none hangs, and the router
counts every refusal. A fresh app: how much of a burst a replica takes depends on the windows the
traffic before it grew."""
from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest
from router_helpers import Outcome, auth, completion, fresh_side_app, router_stats, wait_until_idle

from serve_app.statistics import percentile

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def burst_url(app_config, base_url):  # base_url: the shared app runs Ray Serve on its HTTP port
    if os.environ.get("LLMSERVE_TEST_URL"):
        pytest.skip("needs a fresh app of its own")
    yield from fresh_side_app(app_config, "burst")


WARMUP_REQUESTS = 16  # admission refuses on predicted wait only once it has measured completions
BURST_REQUESTS = 300
BURST_SECONDS = 12.0
BURST_MAX_TOKENS = 480
REFUSAL_P99_BOUND_S = 0.1  # from the request reaching our ingress to its 429
# As the client sees it, through Ray Serve's HTTP proxy on a 2-core machine: client p99 36, 54 and 38 ms
# in three quiet runs, but 113, 119, 176 and 566 ms in CI runs where other apps' engines shared the two
# cores, with the ingress-side p99 at 52-59 ms each time: the proxy's tail is the machine's. What the client
# side must show is that no refusal waited for service: its median is at once, and even its tail is far
# below what one served request takes (480 tokens: seconds here). The ingress-side bound above is the goal.
CLIENT_P50_BOUND_S = 0.25
CLIENT_P99_BOUND_S = 1.5


def test_a_burst_far_beyond_capacity_is_refused_at_once_and_nothing_hangs(burst_url, model_name):
    """300 top-class requests in 12 s against a CPU replica that serves a fraction: the refusals come at
    once (429 with Retry-After, decided at the ingress's door or by the router on arrival), not after
    waiting, and the router counts every one. Not streamed: on a 2-core machine the served streams'
    events through Ray Serve's Python proxy would be what a refusal waits behind."""
    base_url = burst_url
    wait_until_idle(base_url)
    before = router_stats(base_url)["classes"]["interactive"]
    url = f"{base_url}/v1/completions"

    async def timed(http: httpx.AsyncClient, delay_s: float, i: int) -> tuple[Outcome, float]:
        await asyncio.sleep(delay_s)
        started = time.monotonic()
        body = completion(model_name, prompt=f"t{i} t{i + 1}", max_tokens=BURST_MAX_TOKENS, priority="interactive")
        response = await http.post(url, json=body, headers=auth("key-gold"))
        outcome = Outcome(response.status_code, retry_after=response.headers.get("retry-after"))
        if response.status_code == 200:
            outcome.tokens = response.json()["usage"]["completion_tokens"]
        else:
            outcome.error_code = response.json()["error"]["code"]
        return outcome, time.monotonic() - started

    async def run() -> list[tuple[Outcome, float]]:
        limits = httpx.Limits(max_connections=BURST_REQUESTS + 10, max_keepalive_connections=BURST_REQUESTS + 10)
        async with httpx.AsyncClient(timeout=300, limits=limits) as http:
            for _ in range(WARMUP_REQUESTS // 4):  # admission refuses on predicted wait once it has measured
                await asyncio.gather(*(http.post(url, json=completion(model_name, max_tokens=8, priority="interactive"),
                                                 headers=auth("key-gold")) for _ in range(4)))
            burst = [timed(http, i * BURST_SECONDS / BURST_REQUESTS, i) for i in range(BURST_REQUESTS)]
            return await asyncio.wait_for(asyncio.gather(*burst), 600)  # none hangs

    results = asyncio.run(run())
    outcomes = [outcome for outcome, _ in results]
    assert all(o.status in (200, 429, 503) for o in outcomes), [o for o in outcomes if o.status not in (200, 429, 503)]
    assert all(o.tokens == BURST_MAX_TOKENS for o in outcomes if o.status == 200)
    assert all(o.retry_after is not None and int(o.retry_after) >= 1 for o in outcomes if o.status != 200)
    to_429 = [seconds for outcome, seconds in results if outcome.status == 429]
    served = sum(o.status == 200 for o in outcomes)
    at_ingress = _ingress_refusal_seconds(burst_url)
    client_p99, ingress_p99 = percentile(to_429, 99), percentile(at_ingress["all"], 99)
    print(f"burst: {served} served, {len(to_429)} 429, {sum(o.status == 503 for o in outcomes)} 503; time to a 429 "
          f"p50 / p99: client {_ms(percentile(to_429, 50))} / {_ms(client_p99)}, ingress "
          f"{_ms(percentile(at_ingress['all'], 50))} / {_ms(ingress_p99)} "
          f"({len(at_ingress['door'])} decided at the door, {len(at_ingress['router'])} by the router)")
    # Far beyond capacity: most of the burst turned away, or this measured nothing. Since the window cuts
    # by a fifth instead of halving (beta 0.8), about a third of the burst is served: three runs here gave
    # 101-104 served, 144-148 429s on arrival and 49-54 503s at the queue deadline.
    refused = sum(o.status != 200 for o in outcomes)
    assert refused >= BURST_REQUESTS // 2, f"only {refused} of {BURST_REQUESTS} refused"
    assert len(to_429) >= BURST_REQUESTS // 3, f"only {len(to_429)} of {BURST_REQUESTS} refused on arrival"
    assert all(o.error_code == "overloaded" for o in outcomes if o.status == 429)
    assert len(at_ingress["all"]) == len(to_429)
    assert ingress_p99 < REFUSAL_P99_BOUND_S, f"p99 time to a 429 in the ingress was {_ms(ingress_p99)}"
    client_p50 = percentile(to_429, 50)
    assert client_p50 < CLIENT_P50_BOUND_S, f"median time to a 429 at the client was {_ms(client_p50)}"
    assert client_p99 < CLIENT_P99_BOUND_S, f"p99 time to a 429 at the client was {_ms(client_p99)}"
    # The router counted every refusal, those its ingress answered at the door included.
    deadline = time.monotonic() + 10
    while True:
        after = router_stats(base_url)["classes"]["interactive"]
        if after["refused_overload"] - before["refused_overload"] == len(to_429) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert after["refused_overload"] - before["refused_overload"] == len(to_429)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _ingress_refusal_seconds(url: str) -> dict[str, list[float]]:
    """The ingress's own time for each 429 it answered (from its spans), all and by where decided."""
    from ray import serve

    spans = serve.get_deployment_handle("Ingress", app_name=url.rsplit("/", 1)[-1]).collected_spans.remote().result()
    refused = [s for s in spans if s["name"] == "ingress.request"
               and s["attributes"].get("http.response.status_code") == 429]
    seconds = {"all": [], "door": [], "router": []}
    for span in refused:
        duration_s = (span["end_ns"] - span["start_ns"]) / 1e9
        seconds["all"].append(duration_s)
        seconds["door" if span["attributes"].get("llm.refused_at") == "door" else "router"].append(duration_s)
    return seconds
