"""The load driver's preset workloads (seeded lengths near the preset's mean and p95, clipped to the
context), their command line, and latencies counted from the scheduled arrival under a concurrency cap."""
from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from autoscaling.loadtest.arrivals import GammaArrivals
from autoscaling.loadtest.cli import build_parser, slos_from_args, spec_from_args
from autoscaling.loadtest.client import ClientOptions, new_http_client
from autoscaling.loadtest.metrics import Slo
from autoscaling.loadtest.preset_workload import context_split, preset_workload
from autoscaling.loadtest.runner import _send_all
from autoscaling.loadtest.workload import PlannedRequest, SpecError
from serve_app.memory.presets import PRESETS, get_preset
from serve_app.statistics import mean, percentile


def sampled(name: str, max_model_len: int, count: int = 20000) -> tuple[list[int], list[int]]:
    spec = preset_workload(name, max_model_len).spec(GammaArrivals(float("inf")), num_requests=count, seed=7)
    planned = spec.plan()
    return [p.prompt_len for p in planned], [p.max_tokens for p in planned]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_lengths_have_the_presets_mean_and_p95_where_the_context_fits(name):
    preset = get_preset(name)
    prompts, outputs = sampled(name, 32768, count=10000)
    assert mean(prompts) == pytest.approx(preset.prompt_len_mean, rel=0.05)
    assert mean(outputs) == pytest.approx(preset.output_len_mean, rel=0.05)
    assert percentile(prompts, 95) == pytest.approx(preset.prompt_len_p95, rel=0.06)
    assert percentile(outputs, 95) == pytest.approx(preset.output_len_p95, rel=0.06)


def test_the_slo_and_class_are_the_presets():
    workload = preset_workload("long_form", 8192)
    assert workload.class_name == "long-form"
    assert workload.slo == Slo(get_preset("long-form").ttft_s, get_preset("long-form").tpot_s)


def test_a_short_context_scales_the_lengths_down_and_no_request_exceeds_it():
    # long-form's p95 request is 3,072 + 4,096 tokens: at 4,096 the p95s shrink to 1,755 + 2,340.
    workload = preset_workload("long-form", 4096)
    assert (workload.preset.prompt_len_p95, workload.preset.output_len_p95) == (1755, 2340)
    prompts, outputs = sampled("long-form", 4096, count=5000)
    assert max(p + o for p, o in zip(prompts, outputs)) <= 4096
    assert max(prompts) == workload.prompt_len.max and max(outputs) == workload.output_len.max  # tails clipped
    assert percentile(outputs, 95) <= workload.preset.output_len_p95 + 1
    # The means shrink by the same factor (4,096 / 7,168): the shape is kept, not collapsed to the clip.
    assert workload.preset.output_len_mean == 2048 * 4096 // 7168
    assert sum(outputs) / len(outputs) == pytest.approx(workload.preset.output_len_mean, rel=0.1)
    assert percentile(outputs, 50) < percentile(outputs, 95) / 1.5


def test_the_context_split_follows_the_p95s_and_adds_up_to_the_context():
    mixed = get_preset("mixed")  # p95 3,072 + 1,024
    assert context_split(mixed, 8192) == (6144, 2048)
    assert sum(context_split(mixed, 4096)) == 4096
    assert context_split(mixed, 2) == (1, 1)
    with pytest.raises(SpecError):
        context_split(mixed, 1)


def test_lengths_are_seeded():
    assert sampled("mixed", 4096, 200) == sampled("mixed", 4096, 200)
    spec = preset_workload("mixed", 4096).spec(GammaArrivals(float("inf")), num_requests=200, seed=8)
    assert [p.max_tokens for p in spec.plan()] != sampled("mixed", 4096, 200)[1]


def test_command_line_preset_workload():
    args = build_parser().parse_args(["run", "--base-url", "http://x", "--workload", "preset", "--preset", "batch",
                                      "--max-model-len", "8192", "--arrival", "poisson:3", "--duration", "10",
                                      "--max-concurrency", "64", "--latency-from-arrival"])
    spec = spec_from_args(args)
    assert spec.class_mix == {"batch": 1.0} and spec.max_concurrency == 64
    assert spec.prompt_len == preset_workload("batch", 8192).prompt_len
    assert slos_from_args(args) == {"batch": Slo(30.0, 0.25)}
    assert args.latency_from_arrival


def test_command_line_preset_slo_can_be_overridden_and_lengths_cannot():
    base = ["run", "--base-url", "http://x", "--workload", "preset", "--preset", "interactive", "--duration", "5"]
    args = build_parser().parse_args([*base, "--slo", "interactive=0.2,-"])
    assert slos_from_args(args) == {"interactive": Slo(0.2, None)}
    for extra in (["--prompt-len", "fixed:10"], ["--mix", "a=1"]):
        with pytest.raises(SpecError):
            spec_from_args(build_parser().parse_args([*base, *extra]))
    with pytest.raises(SpecError, match="needs --preset"):
        spec_from_args(build_parser().parse_args(["run", "--base-url", "http://x", "--workload", "preset",
                                                  "--duration", "5"]))
    with pytest.raises(SpecError, match="unknown preset"):
        spec_from_args(build_parser().parse_args([*base[:-4], "--preset", "chat", "--duration", "5"]))


def test_classes_workload_keeps_its_default_lengths():
    spec = spec_from_args(build_parser().parse_args(["run", "--base-url", "http://x", "--duration", "5"]))
    assert spec.prompt_len.to_dict() == {"kind": "fixed", "value": 256}
    assert spec.output_len.to_dict() == {"kind": "fixed", "value": 256}


# ---- latency from the scheduled arrival ------------------------------------------------------------
SERVICE_S = 0.2


@contextlib.asynccontextmanager
async def _stream_server():
    """A local HTTP server answering every completion after SERVICE_S with one token event, usage and
    [DONE]; yields the driver's own client and the server's root URL."""

    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(SERVICE_S)
        events = [{"choices": [{"text": "x"}]}, {"choices": [], "usage": {"completion_tokens": 1, "prompt_tokens": 1}}]
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return web.Response(text=body, content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/completions", handler)
    async with TestServer(app, host="127.0.0.1") as server, new_http_client(30.0) as http:
        yield http, str(server.make_url("")).rstrip("/")


def _three_at_once() -> list[PlannedRequest]:
    return [PlannedRequest(i, 0.0, "c", (11, 12), 2, 1) for i in range(3)]


def _ttfts(latency_from_arrival: bool, timeout_s: float = 30.0) -> list:
    async def go():
        async with _stream_server() as (http, base_url):
            options = ClientOptions(base_url, "m", send_priority=False, timeout_s=timeout_s)
            return await _send_all(http, options, _three_at_once(), 1, False, latency_from_arrival)

    return sorted(asyncio.run(go()), key=lambda r: r.end_s)


def test_with_one_slot_the_wait_for_it_counts_in_ttft_from_the_arrival():
    records = _ttfts(latency_from_arrival=True)
    # Served one after the other: the third waited two services before its own.
    assert [r.send_s for r in records] == [0.0, 0.0, 0.0]
    # Lower bounds only: each request also pays the client's own overhead, which a busy machine stretches.
    for waited_services, record in enumerate(records):
        assert record.ttft_s >= (waited_services + 1) * SERVICE_S * 0.95


def test_by_default_latency_counts_from_the_send_as_vllm_bench_does():
    records = _ttfts(latency_from_arrival=False)
    assert all(SERVICE_S * 0.95 <= r.ttft_s < SERVICE_S * 1.9 for r in records)
    assert round(records[-1].send_s / SERVICE_S) == 2


def test_the_timeout_counts_from_the_arrival_while_waiting_for_a_slot():
    records = _ttfts(latency_from_arrival=True, timeout_s=SERVICE_S * 1.5)
    outcomes = [(r.outcome, r.error_code) for r in records]
    assert outcomes[0] == ("completed", None)
    assert outcomes[1:] == [("failed", "timeout")] * 2
