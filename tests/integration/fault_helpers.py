"""Killing processes of the `faults` side app and classifying what its clients saw."""
from __future__ import annotations

import asyncio
import json
import time

import httpx
from router_helpers import router_stats

FAULTS_APP = "faults"
# The side app's http settings as deployed (`faults_url` fills it), for tests that check what they asked for.
FAULTS_HTTP: dict = {}


def wait_for_routable(url: str, count: int, timeout_s: float = 600, exclude: str | None = None) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            replicas = router_stats(url)["replicas"]
        except (httpx.HTTPError, KeyError, ValueError):  # the router itself may be restarting
            replicas = {}
        if len([r for r in replicas if r != exclude]) >= count:
            return replicas
        assert time.monotonic() < deadline, f"router sees {sorted(replicas)}, wanted {count} replicas"
        time.sleep(1)


def replica_ids(deployment: str) -> list[str]:
    """Unique ids of the side app's live replicas of `deployment`, from Ray's named actors."""
    import ray

    prefix = f"SERVE_REPLICA::{FAULTS_APP}#{deployment}#"
    return sorted(actor["name"].removeprefix(prefix) for actor in ray.util.list_named_actors(all_namespaces=True)
                  if actor["name"].startswith(prefix) and _alive(actor))


def _alive(actor: dict) -> bool:
    import ray

    try:
        ray.get_actor(actor["name"], namespace=actor["namespace"])
        return True
    except ValueError:
        return False


def kill_replica(deployment: str, replica_id: str | None = None) -> str:
    """Kill one replica actor of `deployment` (the given one, or any); returns its id."""
    import ray

    prefix = f"SERVE_REPLICA::{FAULTS_APP}#{deployment}#"
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(prefix) and (replica_id is None or actor["name"].endswith(replica_id)):
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
            return actor["name"].removeprefix(prefix)
    raise AssertionError(f"no actor for {deployment} replica {replica_id}")


def running_replicas(deployment: str) -> int:
    from ray import serve

    status = serve.status().applications[FAULTS_APP].deployments[deployment]
    return status.replica_states.get("RUNNING", 0)


def engine_stats(replica_id: str) -> dict:
    """One LLM replica's engine counters, asked of that replica itself."""
    from ray import serve

    handle = serve.get_deployment_handle("LLMReplica", app_name=FAULTS_APP)
    return handle.engine_stats.remote(target_replica=replica_id).result(timeout_s=30)


async def stream(client: httpx.AsyncClient, url: str, model: str, max_tokens: int,
                 priority: str = "standard") -> dict:
    """One streamed completion, classified: completed (all tokens), error_event, refused, or cut (the
    connection ended without [DONE], or Ray Serve's proxy answered 500 for an ingress replica that
    died before the response started)."""
    body = {"model": model, "prompt": "fault tolerance", "max_tokens": max_tokens, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}, "priority": priority}
    headers = {"authorization": "Bearer key-gold"} if priority == "interactive" else {}
    outcome = {"status": None, "tokens": 0, "error_code": None, "error_message": None, "done": False,
               "finish": None, "received": 0, "cut": False}
    try:
        async with client.stream("POST", f"{url}/v1/completions", json=body, headers=headers) as response:
            outcome["status"] = response.status_code
            if response.status_code != 200:
                raw = await response.aread()
                try:
                    error = json.loads(raw)["error"]
                except ValueError:  # not ours: the proxy's own plain-text answer
                    outcome["cut"] = response.status_code == 500
                    outcome["error_message"] = raw.decode(errors="replace")[:200]
                    return outcome
                outcome["error_code"], outcome["error_message"] = error["code"], error["message"]
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
                    outcome["error_code"], outcome["error_message"] = event["error"]["code"], event["error"]["message"]
                elif event.get("usage"):
                    outcome["tokens"] = event["usage"]["completion_tokens"]
                elif event["choices"]:
                    outcome["received"] += 1
                    outcome["finish"] = event["choices"][0].get("finish_reason") or outcome["finish"]
    except (httpx.RemoteProtocolError, httpx.ReadError):
        outcome["cut"] = True
    return outcome


async def until(predicate, timeout_s: float, period_s: float = 0.25):
    """Poll `predicate` (sync, run in a thread) until it returns something truthy; returns it."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(period_s)
