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
