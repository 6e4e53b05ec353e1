"""Traces and metrics of the real app: one trace per request across ingress, router and replica
(read back from each process's in-memory exporter), and Prometheus metrics on Ray's metrics port."""
from __future__ import annotations

import os
import re
import time
from typing import Callable

import httpx
import pytest

from autoscaling.bench.prometheus_metrics import RAY_ENGINE_TTFT_HISTOGRAM, histogram_count, histogram_cumulative

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(bool(os.environ.get("LLMSERVE_TEST_URL")),
                                 reason="reads spans through Ray handles of the app this session started")]
APP = "llmserve"


def _spans_of(deployment: str) -> list[dict]:
    from ray import serve

    return serve.get_deployment_handle(deployment, app_name=APP).collected_spans.remote().result(timeout_s=30)


def _trace_spans(request_id: str, timeout_s: float = 20) -> dict[str, dict]:
    """The request's spans by name, once all four have ended (the dispatch ends after the client's stream)."""
    deadline = time.monotonic() + timeout_s
    while True:
        # The ingress routes its own requests: its process also holds the router's queue and dispatch spans.
        ingress_process = _spans_of("Ingress")
        ingress = [s for s in ingress_process if s["attributes"].get("llm.request_id") == request_id]
        found = {}
        if ingress:
            trace_id = ingress[0]["trace_id"]
            others = ingress_process + _spans_of("LLMReplica")
            found = {s["name"]: s for s in [*others, ingress[0]] if s["trace_id"] == trace_id}
        if {"ingress.request", "router.queue_wait", "router.dispatch", "engine.generate"} <= found.keys():
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"trace of {request_id} incomplete: {sorted(found)}")
        time.sleep(0.5)


def test_one_trace_spans_ingress_router_queue_dispatch_and_engine(base_url, model_name):
    body = {"model": model_name, "prompt": "trace me", "max_tokens": 6, "ignore_eos": True, "stream": True,
            "priority": "interactive"}
    request_id = None
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=120,
                      headers={"authorization": "Bearer key-gold"}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {") and request_id is None:
                # vLLM's app names the response after our request id: `cmpl-<id>`.
                request_id = re.search(r'"id":\s*"cmpl-([^"]+)"', line).group(1)
    spans = _trace_spans(request_id)
    root, queued, dispatch, engine = (spans[name] for name in
                                      ("ingress.request", "router.queue_wait", "router.dispatch", "engine.generate"))
    assert root["parent_id"] is None and root["kind"] == "SERVER"
    assert queued["parent_id"] == root["span_id"] and dispatch["parent_id"] == root["span_id"]
    assert engine["parent_id"] == dispatch["span_id"]
    assert root["attributes"]["llm.priority_class"] == "interactive"
    assert root["attributes"]["llm.caller"] == "gold"
    assert root["attributes"]["llm.completion_tokens"] == 6
    assert queued["attributes"]["llm.outcome"] == "dispatched"
    assert queued["attributes"]["llm.replica"] == dispatch["attributes"]["llm.replica"] == engine["attributes"]["llm.replica"]
    assert engine["attributes"]["llm.completion_tokens"] == 6
    assert engine["attributes"]["llm.finish_reason"] == "length"
    # The prompt is tokenized once, on the replica; the ingress only estimates its size for the router.
    assert engine["attributes"]["llm.prompt_tokens"] > 0 and root["attributes"]["llm.estimated_prompt_tokens"] > 0
    assert [e["name"] for e in root["events"]] == ["first_token"]
    assert [e["name"] for e in engine["events"]] == ["first_token"]
    # Nesting in time: the queue wait ends before dispatch starts, the engine runs inside the dispatch.
    assert queued["end_ns"] <= dispatch["start_ns"] <= engine["start_ns"] <= engine["end_ns"] <= dispatch["end_ns"]
    assert all(s["status"] != "ERROR" for s in spans.values())


def test_refused_request_span_carries_status_and_no_downstream_spans(base_url, model_name):
    response = httpx.post(f"{base_url}/v1/completions", timeout=60, headers={"authorization": "Bearer key-bronze"},
                          json={"model": model_name, "prompt": "above my ceiling", "max_tokens": 2,
                                "priority": "interactive"})
    assert response.status_code == 403
    refused = [s for s in _spans_of("Ingress") if s["attributes"].get("http.response.status_code") == 403]
    assert refused and refused[-1]["status"] == "ERROR"
    assert refused[-1]["attributes"]["error.type"] == "priority_above_ceiling"
    downstream = [s for s in _spans_of("Ingress") + _spans_of("LLMReplica")
                  if s["trace_id"] == refused[-1]["trace_id"] and s["name"] != "ingress.request"]
    assert downstream == []


def _scrape(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text


def _scrape_until(port: int, missing: Callable[[str], list[str]], within_s: float = 90) -> str:
    """The metrics text once `missing(text)` is empty. Each process exports on its own timer (seconds apart):
    wait for all of them, not the first."""
    deadline = time.monotonic() + within_s
    while True:
        text = _scrape(port)
        lacking = missing(text)
        if not lacking:
            return text
        assert time.monotonic() < deadline, f"metrics still missing after {within_s:.0f} s: {lacking}"
        time.sleep(2)


def _families_missing(*families: str, label: str = "") -> Callable[[str], list[str]]:
    return lambda text: [f for f in families if not re.search(rf"^{f}{{[^}}]*{label}", text, re.MULTILINE)]


def _sample(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_text, value = line[len(name) + 1:].rsplit("} ", 1)
        if all(f'{key}="{val}"' in label_text for key, val in labels.items()):
            total += float(value)
    return total


def test_prometheus_metrics_count_requests_per_class_with_units(base_url, model_name, app_config):
    port = app_config.telemetry.metrics_export_port
    ttft_count = "ray_llmserve_request_ttft_seconds_count"
    before = _sample(_scrape(port), ttft_count, priority_class="interactive")
    sent = 3
    for i in range(sent):
        response = httpx.post(f"{base_url}/v1/completions", timeout=120, headers={"authorization": "Bearer key-gold"},
                              json={"model": model_name, "prompt": f"metrics {i}", "max_tokens": 4,
                                    "ignore_eos": True, "priority": "interactive"})
        assert response.status_code == 200
    gauges_missing = _families_missing("ray_llmserve_router_queue_depth_requests", "ray_llmserve_router_window_requests",
                                       "ray_llmserve_replica_kv_cache_usage_ratio", "ray_llmserve_replica_running_requests")
    text = _scrape_until(port, lambda text: gauges_missing(text) + (
        [] if _sample(text, ttft_count, priority_class="interactive") >= before + sent else [f"{ttft_count} counts"]))
    assert _sample(text, "ray_llmserve_request_tpot_seconds_count", priority_class="interactive") >= sent
    assert _sample(text, "ray_llmserve_http_responses_total", priority_class="interactive", status="200") >= sent
    assert _sample(text, "ray_llmserve_router_admitted_requests_total", priority_class="interactive") >= sent
    assert _sample(text, "ray_llmserve_router_queue_wait_seconds_count", priority_class="interactive") >= sent
    assert _sample(text, "ray_llmserve_router_finished_requests_total", priority_class="interactive",
                   outcome="served") >= sent
    windows = [float(v) for v in re.findall(r"^ray_llmserve_router_window_requests\{[^}]*\} (\S+)", text, re.MULTILINE)]
    assert windows and all(w >= 1 for w in windows)
    kv = [float(v) for v in re.findall(r"^ray_llmserve_replica_kv_cache_usage_ratio\{[^}]*\} (\S+)", text, re.MULTILINE)]
    assert kv and all(0 <= v <= 1 for v in kv)


def test_vllms_own_engine_metrics_come_through_rays_metrics_port_per_replica(base_url, model_name, app_config):
    """`telemetry.engine_metrics`: the families `vllm serve` has on its /metrics, as `ray_vllm_*`."""
    port = app_config.telemetry.metrics_export_port
    response = httpx.post(f"{base_url}/v1/completions", timeout=120,
                          json={"model": model_name, "prompt": "engine metrics", "max_tokens": 4, "ignore_eos": True})
    assert response.status_code == 200
    text = _scrape_until(port, _families_missing("ray_vllm_num_requests_running", "ray_vllm_kv_cache_usage_perc",
                                                 "ray_vllm_time_to_first_token_seconds_count",
                                                 "ray_vllm_generation_tokens_total", label="ReplicaId="))
    generated = re.findall(r"^ray_vllm_generation_tokens_total\{[^}]*\} (\S+)", text, re.MULTILINE)
    assert sum(float(v) for v in generated) >= 4
    # The histogram `request_path_h200.py` reads beside `vllm serve`'s own (test_openai_fidelity reads that one).
    ttft = histogram_cumulative(text, RAY_ENGINE_TTFT_HISTOGRAM)
    assert histogram_count(ttft) >= 1 and 0.04 in ttft, ttft


def _recent_ttft(base_url: str, class_name: str) -> tuple[dict | None, dict | None]:
    stats = httpx.get(f"{base_url}/v1/router/stats", timeout=30).json()
    return (stats["ingress"]["ttft_recent"].get(class_name), stats["replica_ttft_recent"].get(class_name))


def test_router_stats_split_recent_ttft_between_ingress_and_replica(base_url, model_name):
    deadline = time.monotonic() + 30  # the recent window is 10 s: wait until earlier tests' samples left it
    while any(summary and summary["n"] for summary in _recent_ttft(base_url, "interactive")):
        assert time.monotonic() < deadline, "interactive samples never aged out of the recent window"
        time.sleep(1)
    body = {"model": model_name, "prompt": "split ttft", "max_tokens": 8, "ignore_eos": True, "stream": True,
            "priority": "interactive"}
    started = time.monotonic()
    client_ttft = None
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=120,
                      headers={"authorization": "Bearer key-gold"}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if client_ttft is None and line.startswith("data: {"):
                client_ttft = time.monotonic() - started
    ingress, replica = _recent_ttft(base_url, "interactive")
    assert ingress["n"] == 1 and replica["n"] == 1
    # Each later hop's clock starts later and stops no later: client >= ingress >= replica.
    assert client_ttft >= ingress["p50_s"] >= replica["p50_s"] > 0, (client_ttft, ingress, replica)
    # The same first part, by stage of its way (wall clock, one machine here).
    path = httpx.get(f"{base_url}/v1/router/stats", timeout=30).json()["ingress"]["first_part_path"]
    stages = ("before_dispatch", "hop_to_replica", "replica_to_first_token", "first_token_to_delivery", "delivery",
              "ingress_write")
    assert all(path[stage]["n"] >= 1 and path[stage]["max_s"] >= 0 for stage in (*stages, "total")), path
    assert path["replica_to_first_token"]["p50_s"] > 0 and path["total"]["max_s"] < client_ttft + 1.0, path
    # The ingress's own intake (key, body, door) before the request was made: stamped in its route.
    assert path["intake"]["n"] >= 1 and 0 <= path["intake"]["p50_s"] < client_ttft, path
    # A benchmark asks for a whole load point's path (up to 120 s back); a window that ended before this
    # request has none of it; a window out of range is refused.
    def path_within(window_s: float) -> httpx.Response:
        return httpx.get(f"{base_url}/v1/router/stats", params={"first_part_window_s": window_s}, timeout=30)

    assert path_within(120).json()["ingress"]["first_part_path"]["total"]["n"] >= path["total"]["n"]
    assert path_within(0.001).json()["ingress"]["first_part_path"]["total"]["n"] == 0
    assert all(path_within(bad).status_code == 400 for bad in (0, 121, "soon"))
    # The class's slowest first parts since start, each with its stages in ms (this one among them).
    slowest = httpx.get(f"{base_url}/v1/router/stats", timeout=30).json()["ingress"]["slowest_first_parts"]
    kept = slowest["interactive"]
    assert kept and all(a["total"] >= b["total"] for a, b in zip(kept, kept[1:]))
    # (A response that began without a token, an error, has no replica_to_first_token stage.)
    assert all(0 < r.get("replica_to_first_token", 1e-3) <= r["total"] and r["written"] > 1e9 for r in kept), kept
    # The replica's stage split where vLLM's engine takes over (its OpenAI layer before; the core's queue and
    # prefill from vLLM's own request stats; the token's way back to the replica's process after): on the
    # one host clock, each part >= 0 (to the clock readings' microseconds) and all of them the whole stage.
    split = ("replica_before_engine", "engine_intake", "engine_queue", "engine_prefill", "engine_output")
    assert all(path[stage]["n"] >= 1 for stage in split), path
    engine_split = [r for r in kept if "engine_prefill" in r]
    assert engine_split, kept
    for record in engine_split:
        assert all(record[stage] >= -0.01 for stage in split), record  # ms
        assert abs(sum(record[stage] for stage in split) - record["replica_to_first_token"]) < 0.05, record
    assert max(r["engine_prefill"] for r in engine_split) > 0, engine_split


def test_router_stats_carry_the_ingress_event_loop_stalls(base_url):
    loop_stalls = httpx.get(f"{base_url}/v1/router/stats", timeout=30).json()["ingress"]["loop_stalls"]
    # process.loop_stall_warning_s (default 5 s): the watchdog runs in the ingress process.
    assert loop_stalls["threshold_s"] > 0 and loop_stalls["stalls"] >= loop_stalls["unseen_stalls"] >= 0
    cpu = loop_stalls["cpu_recent"]  # the ingress process's CPU over the watchdog's last beats
    assert cpu["over_s"] > 0 and 0 < cpu["process"] < 64 and 0 <= cpu["loop_thread"] <= cpu["process"] + 0.05


def test_router_stats_carry_gc_pauses_of_the_frozen_ingress(base_url):
    stats = httpx.get(f"{base_url}/v1/router/stats", timeout=30).json()
    ingress = stats["ingress"]
    # process.freeze_gc_after_start (default on): the start-up heap is out of the collector's reach,
    # and the full collection before the freeze is the first pause each process recorded.
    assert ingress["gc_frozen_objects"] > 10_000
    assert ingress["gc_pauses"]["gen2"]["count"] >= 1 and ingress["gc_pauses"]["gen2"]["max_s"] > 0
    # process.full_gc: scheduled (default): with nothing in flight, a full collection follows
    # within full_gc_min_interval_s (10 s) plus the 1 s check period.
    first = ingress["gc_pauses"]["gen2"]["count"]
    deadline = time.monotonic() + 30
    while httpx.get(f"{base_url}/v1/router/stats", timeout=30).json()["ingress"]["gc_pauses"]["gen2"]["count"] <= first:
        assert time.monotonic() < deadline, "no scheduled full collection in a quiet ingress within 30 s"
        time.sleep(1)


def test_our_lines_are_stamped_in_the_replicas_own_log_file(base_url):
    """Our loggers sit under Ray Serve's (`serve_app.telemetry.log_names`): a replica's line carries Serve's
    level, time, deployment and replica, in that replica's log file."""
    if os.environ.get("LLMSERVE_TEST_URL"):
        pytest.skip("the app's Ray session is another process's")
    from pathlib import Path

    import ray

    serve_logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    text = "\n".join(path.read_text(errors="replace") for path in serve_logs.glob("replica_llmserve_LLMReplica_*.log"))
    ready = [line for line in text.splitlines() if "engine ready in" in line]
    assert ready, f"no replica said its engine was ready in {serve_logs}"
    assert re.match(r"INFO \d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} llmserve_LLMReplica \w+ ", ready[0]), ready[0]
