"""Reading the router's own counters over HTTP, for tests that account for every request."""
from __future__ import annotations

import time

import httpx


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


def fresh_side_app(app_config, name: str):
    """Deploy the test config again as side app `name` (fresh windows and admission state), yield its
    URL once its router sees a replica, delete it after."""
    from serve_app.local import delete_side_app, deploy_side_app

    url = deploy_side_app(app_config, name)
    deadline = time.monotonic() + 600
    while not router_stats(url)["replicas"]:
        assert time.monotonic() < deadline, f"the {name} app's router never saw its replica"
        time.sleep(1)
    yield url
    delete_side_app(name)
