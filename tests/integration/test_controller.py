"""The controller on the real app: memory-budget engine args, reconciliation with vLLM, window caps, the
replicas' load reports."""
from __future__ import annotations

import time

import httpx
import pytest

pytestmark = pytest.mark.integration


def _status(base_url: str) -> dict:
    return httpx.get(f"{base_url}/v1/controller/status", timeout=30).json()


def test_predicted_kv_capacity_matches_what_vllm_allocated(base_url):
    (entry,) = _status(base_url).values()
    assert entry["device_kind"] == "cpu"
    # tiny: 2 layers x 2 KV heads x 64 dims x 2 (K and V) x 2 bytes = 1,024 bytes per token; 1 GiB of KV space.
    assert entry["predicted_kv_tokens"] == 1024**3 // 1024
    assert entry["actual_kv_tokens"] == entry["predicted_kv_tokens"]
    assert abs(entry["relative_error"]) <= 0.03


def test_engine_runs_the_controllers_batch_size(base_url):
    (entry,) = _status(base_url).values()
    replica = httpx.get(f"{base_url}/health", timeout=30).json()["replica"]
    stats = entry["plan"]
    assert entry["max_num_seqs"] == stats["max_num_seqs"]
    assert replica["window_cap"] is None or replica["window_cap"] <= entry["max_num_seqs"]


def test_window_cap_reaches_the_replica(client, model_name, base_url):
    for _ in range(20):
        client.completions.create(model=model_name, prompt=" ".join(f"t{10 + j}" for j in range(100)),
                                  max_tokens=4, extra_body={"ignore_eos": True})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        (entry,) = _status(base_url).values()
        replica = httpx.get(f"{base_url}/health", timeout=30).json()["replica"]
        if replica["window_cap"] is not None:
            break
        time.sleep(1)
    # The cap the replica reports to routers (routing stats) is the controller's decision.
    assert replica["window_cap"] == entry["window"]
    # ~100 prompt + 4 output tokens is one 128-token block each: the cap is bounded by max_num_seqs,
    # not by the KV blocks (minus vLLM's null block).
    assert entry["window"] == min(entry["max_num_seqs"], entry["actual_kv_tokens"] // 128 - 1)


def test_each_replica_reports_its_engine_queue_event_loop_lag_and_delivery_calls(base_url, client, model_name):
    client.completions.create(model=model_name, prompt="hello", max_tokens=4)  # at least one delivery
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        (entry,) = _status(base_url).values()
        load = entry.get("engine_load")
        if load and load["loop_lag_p99_s"] is not None and load["delivery_calls"]["n"] > 0:
            break
        time.sleep(1)
    # The replica's own figures, as benchmarks sample them beside the router's windows.
    assert set(load) == {"num_running", "num_waiting", "loop_lag_p99_s", "loop_lag_max_s", "cpu_recent",
                         "gc_pauses", "inter_token_recent", "delivery_calls"}
    # Young collections run all the time in a serving process; a replica's pause can stall its first tokens.
    young = load["gc_pauses"]["gen0"]
    assert young["count"] > 0 and 0 <= young["max_s"] < 10
    cpu = load["cpu_recent"]  # the watchdog's beats span seconds by now; a process uses at least some CPU
    assert cpu["over_s"] > 0 and 0 <= cpu["loop_thread"] <= cpu["process"] + 0.05 and 0 < cpu["process"] < 64
    recent = load["inter_token_recent"]  # the 4 tokens may be older than its horizon by now
    assert recent["tokens"] >= 0 and (recent["mean_s"] is None or 0 < recent["mean_s"] <= recent["max_s"] < 10)
    assert load["num_running"] >= 0 and load["num_waiting"] >= 0
    assert 0 <= load["loop_lag_p99_s"] <= load["loop_lag_max_s"] < 10
    calls = load["delivery_calls"]
    assert calls["n"] > 0 and 0 < calls["p50_s"] <= calls["max_s"] < 10 and calls["chunks_max"] >= 1
