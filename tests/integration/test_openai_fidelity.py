"""Differential test: every case of serve_app/fidelity_matrix.py sent to this app and to `vllm serve`
on the same checkpoint and settings, one at a time, compared body by body (serve_app/fidelity.py):
status codes, error type/param and every body field but ids and timestamps.

Our side is a side app of the test config without the request limits of our own (`http.*`, which
refuse on purpose what vLLM would serve) and with vLLM's default batch sizes, so that both engines
run the same settings; the reference is started from the engine arguments our replicas build.
"""
from __future__ import annotations

import dataclasses
import os

import pytest
from ports import free_port
from vllm_reference import cli_flags, reference_servers

from serve_app.config import AppConfig, parse_config
from serve_app.fidelity import request_matrix, run_matrix
from serve_app.synthetic_model import ensure_model

pytestmark = pytest.mark.integration


def reference_server_args(config: AppConfig) -> list[str]:
    """`vllm serve` flags for the engine arguments our replicas build and the app's frontend options
    (tool parser, ...): whatever our replica sets that vLLM's defaults do not."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    from serve_app.deployments.replica import engine_args_from_config

    ours = engine_args_from_config(config)
    defaults = AsyncEngineArgs(model=ours.model)
    changed = {field.name: getattr(ours, field.name) for field in dataclasses.fields(ours)
               if getattr(ours, field.name) != getattr(defaults, field.name)}
    for passed_separately in ("model", "served_model_name", "max_model_len"):
        changed.pop(passed_separately, None)
    return cli_flags({**changed, **config.engine.frontend})


def _distinct_free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


FIDELITY_APP = "fidelity"


def fidelity_config(app_config: AppConfig) -> AppConfig:
    data = app_config.model_dump(mode="json")
    data["http"] = {key: data["http"][key] for key in ("host", "port")}
    data["engine"] = {**data["engine"], "batch_size_policy": "vllm_default"}
    return parse_config(data)


@pytest.fixture(scope="module")
def health_while_starting() -> list[tuple[int, dict | None, float]]:
    """(status, our JSON body or None, seconds to answer) of each /health asked while the app started."""
    return []


@pytest.fixture(scope="module")
def ours_url(app_config, base_url, health_while_starting):  # base_url: the shared app runs Ray Serve
    from router_helpers import fresh_side_app

    if os.environ.get("LLMSERVE_TEST_URL"):
        pytest.skip("deploys a side app on the Ray cluster this session started")

    def record(response, seconds: float) -> None:
        ours = response.headers.get("content-type", "").startswith("application/json") and "status" in response.text
        health_while_starting.append((response.status_code, response.json() if ours else None, seconds))
    yield from fresh_side_app(fidelity_config(app_config), FIDELITY_APP, on_health=record)


@pytest.fixture(scope="module")
def reference_url(app_config, tmp_path_factory):
    """`vllm serve` of the app's checkpoint with the engine arguments and frontend options of its replicas."""
    config = fidelity_config(app_config)
    model = config.model
    checkpoint = ensure_model(model.synthetic_shape, model.resolved_path()) if not model.path else model.resolved_path()
    with reference_servers(checkpoint, model.served_name, [free_port()], config.engine.max_model_len,
                           tmp_path_factory.mktemp("vllm_serve"), reference_server_args(config)) as started:
        (server, ready_s), = started
        print(f"vllm serve at {server.url} healthy {ready_s:.0f}s after launch (log {server.log_path})")
        yield server.url


def test_health_answers_503_at_once_while_the_engine_starts(ours_url, health_while_starting):
    """Before the ingress is up Ray's proxy answers for it; from then on ours says why it is not ready,
    within the 2 s probe deadline (never waiting on the starting engine), until the first 200."""
    answered_by_us = [(status, body, seconds) for status, body, seconds in health_while_starting if body]
    assert answered_by_us[-1][0] == 200
    not_ready = [(body, seconds) for status, body, seconds in answered_by_us if status == 503]
    assert not_ready, f"the engine was never seen starting: {health_while_starting}"
    assert all(body["status"] == "unhealthy" and body["error"] for body, _ in not_ready)
    # Each of the ingress's two probes gives up after 2 s, so a typical answer takes far less than that. On CI's
    # 2 cores, shared with the engine compiling, single answers took 7.6 s and 14.7 s (the ingress process got
    # no core). An answer that waited on the engine would take the whole start, which is measured here as the
    # time the polls spanned (each answer plus the poller's 1 s pause): no answer may take a quarter of it.
    answer_seconds = sorted(seconds for _, _, seconds in answered_by_us)
    start_spanned_s = sum(seconds + 1.0 for _, _, seconds in health_while_starting)
    assert len(not_ready) >= 3, f"too few answers while the engine started: {health_while_starting}"
    assert answer_seconds[len(answer_seconds) // 2] < 2.5, answer_seconds
    assert answer_seconds[-1] < start_spanned_s / 4, (answer_seconds, start_spanned_s)


def test_every_case_matches_vllm_serve(ours_url, reference_url, model_name):
    report = run_matrix(ours_url, reference_url, request_matrix(model_name))
    print(report.format_table())
    assert not report.mismatched, report.format_table()


def test_vllm_serves_ttft_histogram_reads_as_the_latency_benchmark_reads_it(reference_url):
    """`request_path_h200.py` compares vLLM's own TTFT histogram on both servers: `vllm serve`'s /metrics, as the
    matrix above left it (our replicas' through Ray's metrics port: test_observability)."""
    import httpx

    from autoscaling.bench.prometheus_metrics import ENGINE_TTFT_HISTOGRAM, histogram_count, histogram_cumulative

    buckets = histogram_cumulative(httpx.get(f"{reference_url}/metrics", timeout=30).text, ENGINE_TTFT_HISTOGRAM)
    assert histogram_count(buckets) >= 1 and 0.04 in buckets and 0.1 in buckets, buckets
