"""Reading the router's own counters over HTTP, and request helpers, for tests that account for every
request."""
from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

# Random weights may emit special tokens; keeping them in the text makes every token one word.
EXACT = {"ignore_eos": True, "skip_special_tokens": False}


def router_stats(base_url: str) -> dict:
    return httpx.get(f"{base_url}/v1/router/stats", timeout=30).json()


def wait_until_idle(base_url: str, timeout_s: float = 120) -> dict:
    """The router's stats once nothing is queued or running (so counters no longer move)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = router_stats(base_url)
        if stats["queue_depth"] == 0 and stats["running"] == 0:
            return stats
        time.sleep(0.25)
    raise AssertionError(f"router still busy after {timeout_s}s: {stats}")


def fresh_side_app(app_config, name: str, on_health=None):
    """Deploy the test config again as side app `name` (fresh windows and admission state), yield its
    URL once its router sees a replica, delete it after. `on_health` sees each /health answer while
    it starts (see `serve_app.local.wait_until_ready`)."""
    from serve_app.local import delete_side_app, deploy_side_app

    url = deploy_side_app(app_config, name, on_health=on_health)
    deadline = time.monotonic() + 600
    while not router_stats(url)["replicas"]:
        assert time.monotonic() < deadline, f"the {name} app's router never saw its replica"
        time.sleep(1)
    yield url
    delete_side_app(name)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def completion(model: str, **fields) -> dict:
    return {"model": model, "prompt": "t10 t11 t12", "max_tokens": 2, **EXACT, **fields}


@dataclass
class Outcome:
    status: int
    tokens: int = 0
    finish: str | None = None
    done: bool = False
    retry_after: str | None = None
    error_code: str | None = None
    ttft_s: float | None = None


def assert_leaving_client_aborts_its_engine_request(base_url: str, model_name: str, headers: dict | None = None) -> None:
    """A client that reads three events of a 480-token stream and leaves: its engine request is gone well
    before the CPU engine could have generated the rest."""
    body = {"model": model_name, "prompt": "t10 t11 t12 t13 t14", "max_tokens": 480, "stream": True, **EXACT}
    with httpx.Client(timeout=60, headers=headers) as http:
        with http.stream("POST", f"{base_url}/v1/completions", json=body) as response:
            assert response.status_code == 200
            events = 0
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events += 1
                if events >= 3:
                    break
    for _ in range(40):
        replica = httpx.get(f"{base_url}/health", timeout=30, headers=headers).json()["replica"]
        if replica["engine_unfinished_requests"] == 0 and replica["in_flight"] == 0:
            break
        time.sleep(0.25)
    assert replica["engine_unfinished_requests"] == 0
    assert replica["in_flight"] == 0
    assert replica["num_running"] <= 1  # the last recorded step may still show it; the engine no longer does
