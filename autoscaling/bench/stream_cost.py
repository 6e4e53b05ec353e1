"""CPU time per streamed token, per process of a serving path: what `benchmarks/stream_cpu_cost.py` reports.

A process's CPU time (user + system, `serve_app.engine_processes.cpu_seconds`) is read before and after a
load; the difference over the tokens and events the clients received is its cost per 1,000 of each. Pure: the
readings are passed in.
"""
from __future__ import annotations

from collections.abc import Mapping

def cost_per_thousand(before: Mapping[str, float], after: Mapping[str, float], *, events: int,
                      tokens: int) -> dict[str, dict[str, float | None]]:
    """Per process named in both readings: CPU seconds used, and per 1,000 events and per 1,000 tokens
    received (None where none were)."""
    costs: dict[str, dict[str, float | None]] = {}
    for name in before.keys() & after.keys():
        used = after[name] - before[name]
        costs[name] = {"cpu_s": round(used, 3),
                       "per_1000_events_s": round(1000 * used / events, 4) if events else None,
                       "per_1000_tokens_s": round(1000 * used / tokens, 4) if tokens else None}
    return dict(sorted(costs.items()))
