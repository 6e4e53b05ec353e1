"""Open-loop arrivals for the simulator: a schedule, a class mix and per-class lengths.

Arrival schedules and length distributions are the load driver's own
(`autoscaling.loadtest.arrivals`, `autoscaling.loadtest.lengths`), so a simulated workload and a
real load test describe traffic the same way; prompts are lengths only (no token ids).
"""
from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autoscaling.loadtest.arrivals import ArrivalSchedule
from autoscaling.loadtest.lengths import LengthDistribution


@dataclass(frozen=True)
class SimRequest:
    request_id: str
    arrival_s: float
    class_name: str
    prompt_len: int
    output_len: int


@dataclass(frozen=True)
class ClassLoad:
    """A class's share of the arrivals and its lengths."""

    share: float
    prompt_len: LengthDistribution
    output_len: LengthDistribution


@dataclass(frozen=True)
class PiecewiseLinearArrivals(ArrivalSchedule):
    """Poisson arrivals whose rate is linear between `(t_s, rate_rps)` points (e.g. 200 -> 2000 -> 200)."""

    points: tuple[tuple[float, float], ...]
    kind = "piecewise_linear"

    def __post_init__(self) -> None:
        times = [t for t, _ in self.points]
        if len(self.points) < 2 or times[0] != 0 or times != sorted(times):
            raise ValueError("points need t_s starting at 0, non-decreasing, at least two")
        if any(not r >= 0 or math.isinf(r) for _, r in self.points):
            raise ValueError("rates must be finite and >= 0")

    def rate_at(self, t: float) -> float:
        times = [p[0] for p in self.points]
        i = bisect.bisect_right(times, t)
        if i >= len(self.points):
            return 0.0
        (t0, r0), (t1, r1) = self.points[i - 1], self.points[i]
        return r0 if t1 == t0 else r0 + (r1 - r0) * (t - t0) / (t1 - t0)

    def natural_duration_s(self) -> float:
        return self.points[-1][0]

    def offsets(self, rng: random.Random, *, duration_s: float | None, num_requests: int | None) -> list[float]:
        end = min(self.natural_duration_s(), duration_s or math.inf)
        rate_max = max(r for _, r in self.points)
        out: list[float] = []
        t = 0.0
        while rate_max > 0 and (num_requests is None or len(out) < num_requests):
            t += rng.expovariate(rate_max)  # thinning (Lewis & Shedler 1979)
            if t >= end:
                break
            if rng.random() * rate_max < self.rate_at(t):
                out.append(t)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "points": [{"t_s": t, "rate_rps": r} for t, r in self.points]}


def generate(arrival: ArrivalSchedule, classes: Mapping[str, ClassLoad], *, seed: int = 0,
             duration_s: float | None = None, num_requests: int | None = None) -> Iterator[SimRequest]:
    """The requests in arrival order; class and lengths of request i depend only on the seed and i."""
    offsets: Sequence[float] = arrival.offsets(random.Random(f"{seed}:arrivals"), duration_s=duration_s,
                                               num_requests=num_requests)
    names = list(classes)
    weights = [classes[n].share for n in names]
    rng = random.Random(f"{seed}:content")
    for index, offset in enumerate(offsets):
        name = rng.choices(names, weights)[0]
        load = classes[name]
        yield SimRequest(f"r{index}", offset, name, load.prompt_len.sample(rng, index),
                         load.output_len.sample(rng, index))
