"""A replica killed under load, or only its vLLM engine process, or that process hung (stopped): started
streams end with a clean error event, requests not yet started are re-routed, the router stops sending to
the dead replica at once, Ray Serve brings a new one up. Runs on the `faults` side app (two LLM replicas,
two ingress replicas; a hung engine is taken as such after 15 s there)."""
from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Callable

import httpx
import pytest
from fault_helpers import (FAULTS_HTTP, engine_stats, kill_replica, replica_ids, running_replicas, stream, until,
                           wait_for_routable)
from router_helpers import router_stats

from serve_app.engine_processes import is_running

pytestmark = pytest.mark.integration
STREAMS = 16
WHOLES = 4
LONG_OUTPUT = 300


def _both_running(ids: list[str]) -> dict[str, dict] | None:
    engines = {replica_id: engine_stats(replica_id) for replica_id in ids}
    return engines if all(e["engine_unfinished_requests"] > 0 for e in engines.values()) else None


def _signal_engine_process(sig: int) -> Callable[[str], str]:
    """A kill for `_load_with_a_kill` that signals one LLM replica's vLLM engine core: SIGKILL as a GPU fault or
    the OOM killer would (the replica's actor lives on until its health check fails), or SIGSTOP, a hang that
    raises nothing and, but for the replica's watchdog, would hold its requests and memory for ever."""
    def kill(replica_id: str) -> str:
        pids = engine_stats(replica_id)["engine_pids"]
        assert pids, f"LLM replica {replica_id} reported no engine process"
        _signalled.append(pids[0])
        os.kill(pids[0], sig)
        return replica_id
    return kill


_signalled: list[int] = []


def _kill_replica_actor(replica_id: str) -> str:
    return kill_replica("LLMReplica", replica_id)


async def _whole(client: httpx.AsyncClient, url: str, model: str) -> dict:
    """One completion answered whole (not streamed): nothing of it reaches the client before its end, so a
    replica lost under it costs the client nothing but time (the ingress re-routes it)."""
    response = await client.post(f"{url}/v1/completions", json={"model": model, "prompt": "whole answer",
                                                                 "max_tokens": LONG_OUTPUT, "ignore_eos": True})
    body = response.json()
    return {"status": response.status_code, "retry_after": response.headers.get("retry-after"),
            "tokens": body.get("usage", {}).get("completion_tokens"), "error": body.get("error")}


async def _load_with_a_kill(url: str, model: str,
                            kill: Callable[[str], str]) -> tuple[list[dict], list[dict], list[dict], str]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(180)) as client:
        streams = [asyncio.create_task(stream(client, url, model, LONG_OUTPUT)) for _ in range(STREAMS)]
        wholes = [asyncio.create_task(_whole(client, url, model)) for _ in range(WHOLES)]
        # Kill a replica while both run streams, as their engines count them (one ingress replica's
        # router stats show only the streams it routed, and each may have routed its own to one replica).
        ids = replica_ids("LLMReplica")
        engines = await until(lambda: _both_running(ids), 120)
        await asyncio.sleep(1.0)  # let streams get well under way
        victim = await asyncio.to_thread(kill, max(ids, key=lambda r: engines[r]["engine_unfinished_requests"]))
        # Sent after the kill, one at a time, in the top class: each starts at once on the survivor
        # (its reserved headroom; the standard streams still queued for it would otherwise hold them
        # past their queue deadline on a CPU replica), never on the dead one.
        after = [await stream(client, url, model, 8, priority="interactive") for _ in range(6)]
        return await asyncio.gather(*streams), await asyncio.gather(*wholes), after, victim


def _assert_every_request_accounted_for(before: list[dict], wholes: list[dict], after: list[dict]) -> None:
    # Whole answers are never lost to the fault: served in full (re-routed if need be), or refused cleanly.
    assert all((w["status"] == 200 and w["tokens"] == LONG_OUTPUT) or
               (w["status"] in (429, 503) and w["retry_after"] and w["error"]) for w in wholes), wholes
    outcomes = before + after
    completed = [o for o in outcomes if o["status"] == 200 and o["error_code"] is None and not o["cut"]]
    error_events = [o for o in outcomes if o["status"] == 200 and o["error_code"] is not None]
    refused = [o for o in outcomes if o["status"] in (429, 503)]
    # Every request accounted for: completed in full, a clean error event, or a clean refusal.
    assert len(completed) + len(error_events) + len(refused) == len(outcomes), outcomes
    assert all(o["done"] for o in completed + error_events), "a stream ended without [DONE]"
    assert all(o["tokens"] in (LONG_OUTPUT, 8) and o["finish"] == "length" for o in completed)
    assert all(o["error_code"] == "stream_failed" and "model replica" in o["error_message"] for o in error_events), \
        [o for o in error_events if o["error_code"] != "stream_failed" or "model replica" not in o["error_message"]]
    # The victim held streams mid-way: those end with an error event; the survivor's complete.
    assert error_events, "the killed replica's started streams should end with an error event"
    assert len(completed) >= STREAMS // 4, outcomes
    # After the kill the router routes around the dead replica at once.
    assert all(o["status"] == 200 and o["error_code"] is None for o in after), after


def _assert_replaced_and_routed_to(url: str, model: str, victim: str) -> None:
    """Ray Serve replaces the replica; the router picks the new one up."""
    deadline = time.monotonic() + 600
    while running_replicas("LLMReplica") < 2 or victim in replica_ids("LLMReplica"):
        assert time.monotonic() < deadline, "Ray Serve did not bring the replica back"
        time.sleep(2)
    replicas = wait_for_routable(url, 2, exclude=victim)
    assert victim not in replicas
    response = httpx.post(f"{url}/v1/completions", timeout=120,
                          json={"model": model, "prompt": "back", "max_tokens": 4, "ignore_eos": True})
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 4


def test_killed_replica_under_load_loses_nothing_and_comes_back(faults_url, model_name):
    before, wholes, after, victim = asyncio.run(_load_with_a_kill(faults_url, model_name, _kill_replica_actor))
    _assert_every_request_accounted_for(before, wholes, after)
    assert victim not in router_stats(faults_url)["replicas"]
    _assert_replaced_and_routed_to(faults_url, model_name, victim)


def test_killed_engine_process_under_load_loses_nothing_and_its_replica_is_replaced(faults_url, model_name):
    # vLLM's app answers a dead engine with its own error (a 500 event, "EngineCore encountered an issue");
    # the replica words it as its own failure, and the calls that reach it until Ray Serve's health check
    # replaces it fail as a lost replica's do, so the ingress re-routes them.
    before, wholes, after, victim = asyncio.run(_load_with_a_kill(faults_url, model_name,
                                                                  _signal_engine_process(signal.SIGKILL)))
    _assert_every_request_accounted_for(before, wholes, after)
    _assert_replaced_and_routed_to(faults_url, model_name, victim)


def test_hung_engine_process_is_killed_and_its_requests_fail_over(faults_url, model_name):
    _signalled.clear()
    try:
        before, wholes, after, victim = asyncio.run(_load_with_a_kill(faults_url, model_name,
                                                                      _signal_engine_process(signal.SIGSTOP)))
        _assert_every_request_accounted_for(before, wholes, after)
        # The watchdog killed the hung process (a stopped process ends only by SIGKILL): its memory is free.
        assert not is_running(_signalled[0]), "the hung engine process still lives"
        _assert_replaced_and_routed_to(faults_url, model_name, victim)
    finally:
        for pid in _signalled:  # whatever happened above, leave no stopped process behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_direct_replicas_listen_in_the_configured_port_range_replacements_too(faults_url):
    """Direct delivery with `http.direct_ports`: every LLM replica's connection server is in the range, the ones
    Ray Serve started in place of the killed replicas above as well (a port freed by a dead one is taken again)."""
    if FAULTS_HTTP.get("delivery") != "direct":
        pytest.skip("the LLM replicas listen for connections with delivery direct only")
    first, last = FAULTS_HTTP["direct_ports"]
    wait_for_routable(faults_url, 2)
    ports = {replica_id: engine_stats(replica_id)["direct"]["port"] for replica_id in replica_ids("LLMReplica")}
    assert len(ports) == 2 and all(first <= port <= last for port in ports.values()), (ports, first, last)
    assert len(set(ports.values())) == 2, ports  # one node: each replica on its own port
