"""CPU time per streamed token, per process of a serving path: what `benchmarks/stream_cpu_cost.py` reports.

A process's CPU time (user + system) is read before and after a load; the difference over the tokens and
events the clients received is its cost per 1,000 of each. Pure: the readings are passed in.
"""
from __future__ import annotations

from collections.abc import Mapping

CLOCK_TICKS_PER_S = 100  # /proc/<pid>/stat's utime and stime unit on Linux (sysconf(_SC_CLK_TCK))


def proc_stat_cpu_s(stat_line: str, ticks_per_s: int = CLOCK_TICKS_PER_S) -> float:
    """User + system CPU seconds from a /proc/<pid>/stat line (fields 14 and 15; the command name, field 2,
    is parenthesised and may hold spaces, so fields are counted after its closing parenthesis)."""
    after_name = stat_line[stat_line.rindex(")") + 2:].split()
    utime, stime = int(after_name[11]), int(after_name[12])
    return (utime + stime) / ticks_per_s


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
