"""Open-loop arrival schedules: when each request is due, as offsets in seconds from the run's start.

Pure and seeded: a schedule draws from the `random.Random` it is given and nothing else.
"""
from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable


class ArrivalSchedule(ABC):
    """Send offsets (seconds from the start, non-decreasing) for a run of a given length or count."""

    kind: str

    @abstractmethod
    def offsets(self, rng: random.Random, *, duration_s: float | None, num_requests: int | None) -> list[float]:
        """At most `num_requests` offsets, none past `duration_s` (either may be None, not both)."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The schedule as the result JSON's `workload.arrival`."""

    def natural_duration_s(self) -> float | None:
        """A schedule that defines its own length (step, ramp) returns it; rate-only ones None."""
        return None


def _check_bounds(duration_s: float | None, num_requests: int | None) -> None:
    if duration_s is None and num_requests is None:
        raise ValueError("a run needs a duration or a number of requests")
    if duration_s is not None and duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    if num_requests is not None and num_requests <= 0:
        raise ValueError(f"num_requests must be positive, got {num_requests}")


@dataclass(frozen=True)
class GammaArrivals(ArrivalSchedule):
    """Renewal process with gamma inter-arrivals of mean 1/rate and coefficient of variation `cv`
    (shape 1/cv^2): cv=1 is Poisson, cv>1 bursty, cv<1 smoother. rate=inf sends everything at once.

    With a request count, the offsets are rescaled so the last is due at num_requests/rate, as
    `vllm bench serve` does, so throughput does not drift with the seed.
    """

    rate_rps: float
    cv: float = 1.0

    def __post_init__(self) -> None:
        if not self.rate_rps > 0:
            raise ValueError(f"arrival rate must be positive, got {self.rate_rps}")
        if not self.cv > 0 or math.isinf(self.cv):
            raise ValueError(f"cv must be positive and finite, got {self.cv}")

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "poisson" if self.cv == 1.0 else "gamma"

    def offsets(self, rng: random.Random, *, duration_s: float | None, num_requests: int | None) -> list[float]:
        _check_bounds(duration_s, num_requests)
        if math.isinf(self.rate_rps):
            if num_requests is None:
                raise ValueError("an infinite arrival rate needs a number of requests")
            return [0.0] * num_requests
        shape = 1.0 / (self.cv * self.cv)
        scale = 1.0 / (self.rate_rps * shape)
        out: list[float] = []
        t = 0.0
        while num_requests is None or len(out) < num_requests:
            t += rng.gammavariate(shape, scale)
            if duration_s is not None and t > duration_s:
                break
            out.append(t)
        if num_requests is not None and duration_s is None and len(out) == num_requests:
            factor = (num_requests / self.rate_rps) / out[-1]
            out = [x * factor for x in out]
        return out

    def with_rate(self, rate_rps: float) -> GammaArrivals:
        return GammaArrivals(rate_rps, self.cv)

    def to_dict(self) -> dict[str, Any]:
        rate = None if math.isinf(self.rate_rps) else self.rate_rps
        return {"kind": self.kind, "rate_rps": rate, "cv": self.cv}


def poisson(rate_rps: float) -> GammaArrivals:
    return GammaArrivals(rate_rps, 1.0)


def gamma(rate_rps: float, cv: float) -> GammaArrivals:
    return GammaArrivals(rate_rps, cv)


def _thinned_poisson(rng: random.Random, rate_at: Callable[[float], float], rate_max: float, end_s: float,
                     num_requests: int | None) -> list[float]:
    """Non-homogeneous Poisson arrivals on [0, end_s) by thinning (Lewis & Shedler 1979)."""
    out: list[float] = []
    if rate_max <= 0:
        return out
    t = 0.0
    while num_requests is None or len(out) < num_requests:
        t += rng.expovariate(rate_max)
        if t >= end_s:
            break
        if rng.random() * rate_max < rate_at(t):
            out.append(t)
    return out


@dataclass(frozen=True)
class StepArrivals(ArrivalSchedule):
    """Poisson arrivals at a piecewise-constant rate: `(duration_s, rate_rps)` segments in order."""

    segments: tuple[tuple[float, float], ...]
    kind = "step"

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError("a step schedule needs at least one (duration, rate) segment")
        for duration, rate in self.segments:
            if not duration > 0 or not rate >= 0 or math.isinf(rate):
                raise ValueError(f"step segment needs duration > 0 and a finite rate >= 0, got {duration}x{rate}")

    def rate_at(self, t: float) -> float:
        start = 0.0
        for duration, rate in self.segments:
            if t < start + duration:
                return rate
            start += duration
        return 0.0

    def natural_duration_s(self) -> float:
        return sum(d for d, _ in self.segments)

    def offsets(self, rng: random.Random, *, duration_s: float | None, num_requests: int | None) -> list[float]:
        end = min(self.natural_duration_s(), duration_s or math.inf)
        return _thinned_poisson(rng, self.rate_at, max(r for _, r in self.segments), end, num_requests)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "step", "segments": [{"duration_s": d, "rate_rps": r} for d, r in self.segments]}


@dataclass(frozen=True)
class RampArrivals(ArrivalSchedule):
    """Poisson arrivals whose rate rises (or falls) linearly from start to end over `duration_s`."""

    start_rate_rps: float
    end_rate_rps: float
    duration_s: float
    kind = "ramp"

    def __post_init__(self) -> None:
        if min(self.start_rate_rps, self.end_rate_rps) < 0 or max(self.start_rate_rps, self.end_rate_rps) <= 0:
            raise ValueError("ramp rates must be >= 0 with one of them positive")
        if math.isinf(self.start_rate_rps) or math.isinf(self.end_rate_rps):
            raise ValueError("ramp rates must be finite")
        if not self.duration_s > 0:
            raise ValueError(f"ramp duration must be positive, got {self.duration_s}")

    def rate_at(self, t: float) -> float:
        if t >= self.duration_s:
            return 0.0
        return self.start_rate_rps + (self.end_rate_rps - self.start_rate_rps) * t / self.duration_s

    def natural_duration_s(self) -> float:
        return self.duration_s

    def offsets(self, rng: random.Random, *, duration_s: float | None, num_requests: int | None) -> list[float]:
        end = min(self.duration_s, duration_s or math.inf)
        return _thinned_poisson(rng, self.rate_at, max(self.start_rate_rps, self.end_rate_rps), end, num_requests)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "ramp", "start_rate_rps": self.start_rate_rps, "end_rate_rps": self.end_rate_rps,
                "duration_s": self.duration_s}


def step(segments: list[tuple[float, float]]) -> StepArrivals:
    return StepArrivals(tuple((float(d), float(r)) for d, r in segments))


def ramp(start_rate_rps: float, end_rate_rps: float, duration_s: float) -> RampArrivals:
    return RampArrivals(float(start_rate_rps), float(end_rate_rps), float(duration_s))
