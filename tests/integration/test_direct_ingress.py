"""`http.direct_ingress_port`: `llmserve run` with Ray Serve's direct ingress, the ingress replica
serving HTTP on its own port (Ray's Python proxy off the path), streaming and refusing as usual, and
shutting its own Ray cluster down on SIGTERM, leaving no vLLM shared memory behind."""
from __future__ import annotations

import json
import signal
import socket
import time

import httpx
import pytest
from own_ray import own_ray_app
from ports import free_port

from serve_app.shared_memory import vllm_segments

pytestmark = pytest.mark.integration


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def direct_app(app_config, base_url, tmp_path_factory):
    """A second local Ray + app in a subprocess: direct ingress must be on before Ray starts. After
    the suite's app (`base_url`): the ports chosen for it are bound before this Ray picks its own."""
    data = app_config.model_dump(mode="json")
    direct_port = free_port()
    data["http"] = {**data["http"], "port": free_port(), "direct_ingress_port": direct_port}
    data["telemetry"] = {"tracing_exporter": "none", "metrics": False}
    segments_before = vllm_segments()  # the suite's own engines' (and any other) shared memory
    with own_ray_app(data, tmp_path_factory.mktemp("direct")) as app:
        yield app.process, direct_port, app.lines, segments_before


def test_direct_ingress_port_serves_streams_and_refusals(direct_app, model_name):
    process, port, lines, _ = direct_app
    assert any(f"http://127.0.0.1:{port}/v1" in line for line in lines), "".join(lines[-20:])
    body = {"model": model_name, "prompt": "direct", "max_tokens": 6, "ignore_eos": True, "stream": True,
            "priority": "interactive"}
    events = []
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=120,
                      headers={"authorization": "Bearer key-gold"}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line.removeprefix("data: ")))
    assert sum(len(e["choices"][0]["text"]) > 0 for e in events) >= 1
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    # The router, errors and stats work the same on the direct port.
    unknown = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=30,
                         json={**body, "stream": False, "priority": "nope"})
    assert unknown.status_code == 400 and "nope" in unknown.json()["error"]["message"]
    stats = httpx.get(f"http://127.0.0.1:{port}/v1/router/stats", timeout=30).json()
    assert stats["classes"]["interactive"]["served"] >= 1


def test_sigterm_shuts_the_app_and_its_ray_down(direct_app):
    process, port, lines, segments_before = direct_app
    process.send_signal(signal.SIGTERM)
    assert process.wait(180) == 0, "".join(lines[-40:])
    # vLLM's shared memory (160+ MB a segment) goes with the engines that made it.
    left = vllm_segments() - segments_before
    assert not left, f"shared-memory segments left after stop: {sorted(map(str, left))}"
    deadline = time.monotonic() + 30
    while _port_open(port):
        assert time.monotonic() < deadline, f"port {port} still answers after shutdown"
        time.sleep(1)
