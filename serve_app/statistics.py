"""The one definition of each latency statistic: percentile, TPOT, SLO attainment.

Serving code, the simulator, the load driver and the benchmarks all read from here, so a p99 means
the same thing in `/v1/router/stats`, in a load-test report and in a benchmark's summary.json.
Percentiles use numpy's default method ("linear": interpolation between closest ranks), the same
one `vllm bench serve` reports, so our figures and vLLM's compare directly. Pure: no Ray, no vLLM.
"""
from __future__ import annotations

import math
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np

PERCENTILE_METHOD = "linear"
REPORTED_PERCENTILES: tuple[int, ...] = (50, 90, 99)
# The keys of a default `summary`, which a capacity estimate may choose its latency statistic from.
SUMMARY_KEYS: tuple[str, ...] = ("mean", *(f"p{q:g}" for q in REPORTED_PERCENTILES))


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (q in 0-100) by `PERCENTILE_METHOD`; None when there are no values."""
    data = np.fromiter(values, dtype=float)
    if data.size == 0:
        return None
    return float(np.percentile(data, q, method=PERCENTILE_METHOD))


def percentile_ceil(values: Iterable[float], q: float) -> int | None:
    """`percentile` rounded up to a whole number, for counts such as token lengths."""
    value = percentile(values, q)
    return None if value is None else math.ceil(value - 1e-9)


def mean(values: Iterable[float]) -> float | None:
    data = np.fromiter(values, dtype=float)
    return float(data.mean()) if data.size else None


def summary(values: Iterable[float], qs: Sequence[int] = REPORTED_PERCENTILES) -> dict[str, float | None]:
    """{"mean", "p50", "p90", "p99"} (or the asked percentiles) of `values`; Nones when empty."""
    data = list(values)
    return {"mean": mean(data), **{f"p{q:g}": percentile(data, q) for q in qs}}


def tpot_s(e2e_s: float | None, ttft_s: float | None, output_tokens: int) -> float | None:
    """Time per output token after the first, as `vllm bench serve` computes it: (e2e - TTFT) / (n - 1).

    None below two tokens (there is no second token to time) or without both times.
    """
    if e2e_s is None or ttft_s is None or output_tokens < 2:
        return None
    return (e2e_s - ttft_s) / (output_tokens - 1)


def meets_slo(ttft_s: float | None, tpot: float | None, ttft_slo_s: float | None,
              tpot_slo_s: float | None) -> bool:
    """One request against its SLO. No first token misses; a request with one token (no TPOT) is
    judged on TTFT alone, as vLLM's goodput does; a None target is not checked."""
    return slo_outcome(ttft_s, tpot, ttft_slo_s, tpot_slo_s) == "met"


SloOutcome = Literal["met", "ttft_only", "tpot_only", "both"]


def slo_outcome(ttft_s: float | None, tpot: float | None, ttft_slo_s: float | None,
                tpot_slo_s: float | None) -> SloOutcome:
    """Which targets of its SLO a request missed (`meets_slo`'s rules): none, the first token alone (late
    or never came), the decode alone (slower than the TPOT target), or both."""
    late = ttft_s is None or (ttft_slo_s is not None and ttft_s > ttft_slo_s)
    slow = tpot_slo_s is not None and tpot is not None and tpot > tpot_slo_s
    return "both" if late and slow else "ttft_only" if late else "tpot_only" if slow else "met"


def attainment(met: Iterable[bool]) -> float | None:
    """Share of requests that met their SLO; None when none were judged."""
    judged = list(met)
    return sum(judged) / len(judged) if judged else None


def rounded_ms(stats: Mapping[str, float | None], digits: int = 2) -> dict[str, float | None]:
    """A `summary` in seconds shown in milliseconds (keys get an `_ms` suffix)."""
    return {f"{key}_ms": None if value is None else round(1000 * value, digits) for key, value in stats.items()}
