"""Measured batch-size profiles (from `benchmarks/batch_sweep.py`) and the choices made from them.

Pure: no vLLM, Ray or plotting imports, so the controller and unit tests can use it directly.
A profile holds one `SweepPoint` per batch size B: exactly B requests of `input_len` prompt tokens
were submitted together and each generated `output_len` tokens.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence


@dataclass(frozen=True)
class SweepPoint:
    """One batch size's measurements: throughput over the batch's wall time, per-request percentiles."""

    batch_size: int
    output_tokens_per_s: float
    request_latency_p50_s: float
    request_latency_p99_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    tpot_p99_s: float
    peak_kv_cache_usage: float  # fraction of the KV cache in use at the busiest engine step, 0..1
    preemptions: int  # requests vLLM preempted during this batch

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for f in fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{f.name} must be finite and non-negative, got {value}")


@dataclass(frozen=True)
class BatchProfile:
    """A batch-size sweep of one model on one device (`gpu` is the device name, 'cpu' on the CPU)."""

    points: tuple[SweepPoint, ...]
    model: str
    gpu: str
    input_len: int
    output_len: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", tuple(sorted(self.points, key=lambda p: p.batch_size)))
        sizes = [p.batch_size for p in self.points]
        if not sizes:
            raise ValueError("a profile needs at least one point")
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"duplicate batch sizes in profile: {sizes}")
        if self.input_len < 1 or self.output_len < 1:
            raise ValueError("input_len and output_len must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "gpu": self.gpu, "input_len": self.input_len,
                "output_len": self.output_len, "points": [asdict(p) for p in self.points]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchProfile:
        return cls(points=tuple(SweepPoint(**p) for p in data["points"]), model=data["model"],
                   gpu=data["gpu"], input_len=data["input_len"], output_len=data["output_len"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> BatchProfile:
        return cls.from_dict(json.loads(text))


def load_sweep_profile(path: str | Path) -> BatchProfile:
    """The profile in a `batch_sweep.json` written by `benchmarks/batch_sweep.py` (its "profile" key)."""
    return BatchProfile.from_dict(json.loads(Path(path).read_text())["profile"])


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def point_from_samples(batch_size: int, wall_s: float, output_tokens: int, ttfts_s: Sequence[float],
                       tpots_s: Sequence[float], latencies_s: Sequence[float], peak_kv_cache_usage: float,
                       preemptions: int) -> SweepPoint:
    """A `SweepPoint` from one batch's per-request samples; throughput is output tokens / wall time."""
    if wall_s <= 0:
        raise ValueError(f"wall_s must be positive, got {wall_s}")
    return SweepPoint(
        batch_size=batch_size, output_tokens_per_s=output_tokens / wall_s,
        request_latency_p50_s=percentile(latencies_s, 50), request_latency_p99_s=percentile(latencies_s, 99),
        ttft_p50_s=percentile(ttfts_s, 50), ttft_p99_s=percentile(ttfts_s, 99),
        tpot_p50_s=percentile(tpots_s, 50), tpot_p99_s=percentile(tpots_s, 99),
        peak_kv_cache_usage=peak_kv_cache_usage, preemptions=preemptions,
    )


def _sorted(points: Sequence[SweepPoint]) -> list[SweepPoint]:
    if not points:
        raise ValueError("no points")
    return sorted(points, key=lambda p: p.batch_size)


def pareto_front(points: Sequence[SweepPoint]) -> list[SweepPoint]:
    """Points no other point beats on both throughput (higher) and p99 request latency (lower).

    A point is dropped when another is at least as good on both and strictly better on one;
    the rest are returned by increasing batch size.
    """
    def dominated(p: SweepPoint) -> bool:
        return any(
            q.output_tokens_per_s >= p.output_tokens_per_s and q.request_latency_p99_s <= p.request_latency_p99_s
            and (q.output_tokens_per_s > p.output_tokens_per_s or q.request_latency_p99_s < p.request_latency_p99_s)
            for q in points)

    return [p for p in _sorted(points) if not dominated(p)]


def knee(points: Sequence[SweepPoint]) -> SweepPoint:
    """The batch size past which doubling the batch buys markedly less throughput (Kneedle).

    x = log2(batch size) and y = throughput are each scaled to [0, 1] over the points (log2
    because sweeps double the batch); the knee is the point highest above the diagonal, i.e.
    maximizing y - x (its distance to the chord of the normalized curve, up to a factor sqrt 2).
    Ties go to the smaller batch. When no point lies above the diagonal (throughput still grows
    at least as fast as log2 of the batch, no saturation yet), the knee is the largest batch.
    """
    ordered = _sorted(points)
    if len(ordered) == 1:
        return ordered[0]
    x = [math.log2(p.batch_size) for p in ordered]
    y = [p.output_tokens_per_s for p in ordered]
    x_span, y_span = x[-1] - x[0], max(y) - min(y)
    if y_span == 0:
        return ordered[0]  # flat: a bigger batch buys nothing
    best, best_gap = ordered[-1], 0.0
    for p, xi, yi in zip(ordered, x, y):
        gap = (yi - min(y)) / y_span - (xi - x[0]) / x_span
        if gap > best_gap + 1e-12:
            best, best_gap = p, gap
    return best


def largest_batch_meeting_slo(points: Sequence[SweepPoint], ttft_p99_s: float | None = None,
                              tpot_p99_s: float | None = None) -> SweepPoint | None:
    """The largest-batch point whose p99 TTFT and p99 TPOT are within the given bounds (None: no bound)."""
    meeting = [p for p in _sorted(points)
               if (ttft_p99_s is None or p.ttft_p99_s <= ttft_p99_s)
               and (tpot_p99_s is None or p.tpot_p99_s <= tpot_p99_s)]
    return meeting[-1] if meeting else None


def choose_batch_size(profile: BatchProfile, ttft_slo_s: float | None, tpot_slo_s: float | None,
                      memory_cap: int) -> int:
    """The controller's max_num_seqs: min(largest measured batch meeting the p99 SLOs, memory_cap).

    A measured batch above the cap that meets the SLO lets the cap itself through (latency grows
    with batch size). When no measured batch meets the SLO the answer is 1, the lowest-latency
    choice. Never above `memory_cap` (which must be >= 1, else ValueError).
    """
    if memory_cap < 1:
        raise ValueError(f"memory_cap must be >= 1, got {memory_cap}: the memory plan leaves no room for a batch")
    best = largest_batch_meeting_slo(profile.points, ttft_slo_s, tpot_slo_s)
    return 1 if best is None else max(1, min(best.batch_size, memory_cap))
