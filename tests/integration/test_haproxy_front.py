"""`http.front: haproxy`: `llmserve run` with Ray Serve's HAProxy mode (HAProxy in front of the ingress
replica's own HTTP server, the multi-node front without Ray's Python proxy), which needs response parts
delivered by pull (`serve_app.delivery_pull`) or direct (`serve_app.direct_link`, runs and parts over a TCP
connection): in each, streams and whole answers come through, a client that leaves has its engine request
aborted, and the ingress reports its streams (and connections) to the LLM replica."""
from __future__ import annotations

import json

import httpx
import pytest
from own_ray import own_ray_app
from ports import free_port
from router_helpers import EXACT, assert_leaving_client_aborts_its_engine_request

pytestmark = pytest.mark.integration
GOLD = {"authorization": "Bearer key-gold"}


@pytest.fixture(scope="module", params=["pull", "direct"])
def haproxy_app(request, app_config, base_url, tmp_path_factory):
    """After the suite's app (`base_url`), whose ports are bound before this Ray picks its own."""
    data = app_config.model_dump(mode="json")
    data["http"] = {**data["http"], "port": free_port(), "front": "haproxy", "delivery": request.param}
    data["telemetry"] = {"tracing_exporter": "none", "metrics": False}
    with own_ray_app(data, tmp_path_factory.mktemp("haproxy")) as app:
        yield f"http://127.0.0.1:{data['http']['port']}", request.param
        assert not [line for line in app.lines if "Traceback" in line], "".join(app.lines[-60:])


@pytest.fixture
def haproxy_url(haproxy_app):
    return haproxy_app[0]


def test_streams_and_whole_answers_come_through_haproxy(haproxy_app, model_name):
    haproxy_url, delivery = haproxy_app
    body = {"model": model_name, "prompt": "t1 t2", "max_tokens": 12, "stream": True, **EXACT}
    events = []
    with httpx.stream("POST", f"{haproxy_url}/v1/completions", json=body, timeout=120, headers=GOLD) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line.removeprefix("data: ")))
    assert sum(len(e["choices"][0]["text"].split()) for e in events) == 12
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    whole = httpx.post(f"{haproxy_url}/v1/chat/completions", timeout=120, headers=GOLD,
                       json={"model": model_name, "messages": [{"role": "user", "content": "t3"}], "max_tokens": 7,
                             **EXACT})
    assert whole.status_code == 200, whole.text
    assert whole.json()["usage"]["completion_tokens"] == 7
    refused = httpx.post(f"{haproxy_url}/v1/completions", timeout=30, headers=GOLD,
                         json={**body, "stream": False, "priority": "nope"})
    assert refused.status_code == 400 and "nope" in refused.json()["error"]["message"]
    ingress = httpx.get(f"{haproxy_url}/v1/router/stats", timeout=30).json()["ingress"]
    assert ingress["delivery"] == delivery
    streams = ingress["delivery_streams"]
    assert streams["streams_opened"] >= 1 and streams["stream_failures"] == 0, streams
    if delivery == "pull":
        assert streams["batches"] >= 2, streams
    else:  # the parts came over the connection; the stream beside it carried none
        assert streams["batches"] == 0 and streams["direct"]["connections_opened"] == 1, streams
        assert streams["direct"]["connections_lost"] == 0, streams


def test_a_client_leaving_mid_stream_has_its_engine_request_aborted(haproxy_url, model_name):
    assert_leaving_client_aborts_its_engine_request(haproxy_url, model_name, GOLD)
