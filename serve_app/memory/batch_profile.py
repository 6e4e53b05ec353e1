"""A measured batch-size profile (throughput and latency per batch size) and the choices made
from it: the Pareto set, the knee, and the largest batch meeting a latency SLO. Pure."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class SweepPoint:
    batch_size: int
    output_tokens_per_s: float
    ttft_p99_s: float
    tpot_p99_s: float
    request_latency_p99_s: float
    peak_kv_cache_usage: float = 0.0
    preemptions: int = 0


@dataclass(frozen=True)
class BatchProfile:
    model: str
    device: str
    input_len: int
    output_len: int
    points: tuple[SweepPoint, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> BatchProfile:
        data = json.loads(text)
        data["points"] = tuple(SweepPoint(**p) for p in data["points"])
        return cls(**data)


def pareto_front(points: tuple[SweepPoint, ...] | list[SweepPoint]) -> list[SweepPoint]:
    """Points no other point beats on both throughput (higher) and p99 request latency (lower)."""
    front = [p for p in points if not any(
        q.output_tokens_per_s >= p.output_tokens_per_s and q.request_latency_p99_s <= p.request_latency_p99_s
        and (q.output_tokens_per_s, q.request_latency_p99_s) != (p.output_tokens_per_s, p.request_latency_p99_s)
        for q in points)]
    return sorted(front, key=lambda p: p.batch_size)


def knee(points: tuple[SweepPoint, ...] | list[SweepPoint], share_of_max: float = 0.9) -> SweepPoint:
    """The smallest batch reaching `share_of_max` of the best throughput: past it, latency grows
    for little more throughput."""
    best = max(p.output_tokens_per_s for p in points)
    return min((p for p in points if p.output_tokens_per_s >= share_of_max * best), key=lambda p: p.batch_size)


def largest_batch_meeting_slo(points, ttft_p99_s: float | None = None,
                              tpot_p99_s: float | None = None) -> SweepPoint | None:
    meeting = [p for p in points
               if (ttft_p99_s is None or p.ttft_p99_s <= ttft_p99_s)
               and (tpot_p99_s is None or p.tpot_p99_s <= tpot_p99_s)]
    return max(meeting, key=lambda p: p.batch_size) if meeting else None


def choose_batch_size(profile: BatchProfile, ttft_slo_s: float | None, tpot_slo_s: float | None,
                      memory_cap: int) -> int:
    """Largest measured batch meeting the SLO, never above the memory-derived cap, at least 1."""
    within_memory = [p for p in profile.points if p.batch_size <= memory_cap]
    chosen = largest_batch_meeting_slo(within_memory, ttft_slo_s, tpot_slo_s)
    return max(1, chosen.batch_size if chosen else 1)
