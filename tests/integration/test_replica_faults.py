"""A replica killed under load: started streams end with a clean error event, requests not yet started
are re-routed, the router stops sending to the dead replica at once, Ray Serve brings a new one up;
and deleting the app drains what it holds. Runs on a side app with two CPU replicas."""
from __future__ import annotations

import asyncio
import json
import os
import time

import httpx
import pytest
from router_helpers import router_stats

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(bool(os.environ.get("LLMSERVE_TEST_URL")),
                                 reason="kills replica actors of the Ray cluster this session started")]
SIDE_APP = "faults"
STREAMS = 16
LONG_OUTPUT = 300


@pytest.fixture(scope="module")
def faults_url(app_config, base_url):  # base_url: the shared app runs Ray Serve on its HTTP port
    from serve_app.config import parse_config
    from serve_app.local import delete_side_app, deploy_side_app

    data = app_config.model_dump(mode="json")
    data["replicas"] = {**data["replicas"], "num_replicas": 2}
    url = deploy_side_app(parse_config(data), SIDE_APP)
    _wait_for_routable(url, 2)
    yield url
    delete_side_app(SIDE_APP)


def _wait_for_routable(url: str, count: int, timeout_s: float = 600, exclude: str | None = None) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        replicas = router_stats(url)["replicas"]
        if len([r for r in replicas if r != exclude]) >= count:
            return replicas
        assert time.monotonic() < deadline, f"router sees {sorted(replicas)}, wanted {count} replicas"
        time.sleep(1)


async def _stream(client: httpx.AsyncClient, url: str, model: str, max_tokens: int,
                  priority: str = "standard") -> dict:
    """One streamed completion, classified: completed (all tokens), error_event, refused, or broken."""
    body = {"model": model, "prompt": "fault tolerance", "max_tokens": max_tokens, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}, "priority": priority}
    headers = {"authorization": "Bearer key-gold"} if priority == "interactive" else {}
    outcome = {"status": None, "tokens": 0, "error_code": None, "done": False, "finish": None}
    async with client.stream("POST", f"{url}/v1/completions", json=body, headers=headers) as response:
        outcome["status"] = response.status_code
        if response.status_code != 200:
            outcome["error_code"] = json.loads(await response.aread())["error"]["code"]
            return outcome
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                outcome["done"] = True
                break
            event = json.loads(data)
            if "error" in event:
                outcome["error_code"] = event["error"]["code"]
            elif event.get("usage"):
                outcome["tokens"] = event["usage"]["completion_tokens"]
            elif event["choices"] and event["choices"][0].get("finish_reason"):
                outcome["finish"] = event["choices"][0]["finish_reason"]
    return outcome


def _kill_replica(replica_id: str) -> None:
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(f"SERVE_REPLICA::{SIDE_APP}#LLMReplica#") and actor["name"].endswith(replica_id):
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
            return
    raise AssertionError(f"no actor for replica {replica_id}")


def _running_replicas(deployment: str) -> int:
    from ray import serve

    status = serve.status().applications[SIDE_APP].deployments[deployment]
    return status.replica_states.get("RUNNING", 0)


async def _load_with_a_kill(url: str, model: str) -> tuple[list[dict], list[dict], str]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(180)) as client:
        streams = [asyncio.create_task(_stream(client, url, model, LONG_OUTPUT)) for _ in range(STREAMS)]
        deadline = time.monotonic() + 120
        while True:  # kill a replica while both run streams
            replicas = router_stats(url)["replicas"]
            busy = sorted(replicas, key=lambda r: -replicas[r]["in_flight"])
            if len(busy) == 2 and all(replicas[r]["in_flight"] > 0 for r in busy):
                break
            assert time.monotonic() < deadline, f"load never reached both replicas: {replicas}"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # let streams get well under way
        victim = busy[0]
        _kill_replica(victim)
        # Sent after the kill, one at a time, in the top class: each starts at once on the survivor
        # (its reserved headroom; the standard streams still queued for it would otherwise hold them
        # past their queue deadline on a CPU replica), never on the dead one.
        after = [await _stream(client, url, model, 8, priority="interactive") for _ in range(6)]
        return await asyncio.gather(*streams), after, victim


def test_killed_replica_under_load_loses_nothing_and_comes_back(faults_url, model_name):
    before, after, victim = asyncio.run(_load_with_a_kill(faults_url, model_name))
    outcomes = before + after
    completed = [o for o in outcomes if o["status"] == 200 and o["error_code"] is None]
    error_events = [o for o in outcomes if o["status"] == 200 and o["error_code"] is not None]
    refused = [o for o in outcomes if o["status"] in (429, 503)]
    # Every request accounted for: completed in full, a clean error event, or a clean refusal.
    assert len(completed) + len(error_events) + len(refused) == len(outcomes), outcomes
    assert all(o["done"] for o in completed + error_events), "a stream ended without [DONE]"
    assert all(o["tokens"] in (LONG_OUTPUT, 8) and o["finish"] == "length" for o in completed)
    assert all(o["error_code"] == "stream_failed" for o in error_events)
    # The victim held streams mid-way: those end with an error event; the survivor's complete.
    assert error_events, "the killed replica's started streams should end with an error event"
    assert len(completed) >= STREAMS // 4, outcomes
    # After the kill the router routes around the dead replica at once.
    assert all(o["status"] == 200 and o["error_code"] is None for o in after), after
    assert victim not in router_stats(faults_url)["replicas"]
    # Ray Serve replaces the replica; the router picks the new one up.
    deadline = time.monotonic() + 600
    while _running_replicas("LLMReplica") < 2:
        assert time.monotonic() < deadline, "Ray Serve did not bring the replica back"
        time.sleep(2)
    replicas = _wait_for_routable(faults_url, 2, exclude=victim)
    assert victim not in replicas
    response = httpx.post(f"{faults_url}/v1/completions", timeout=120,
                          json={"model": model_name, "prompt": "back", "max_tokens": 4, "ignore_eos": True})
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 4
