"""Prompt and output length distributions (in tokens), and JSONL traces of recorded requests."""
from __future__ import annotations

import json
import math
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class LengthDistribution(ABC):
    @abstractmethod
    def sample(self, rng: random.Random, index: int) -> int:
        """The length of request `index` (>= 1)."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The distribution as the result JSON's `workload.prompt_len` / `output_len`."""


@dataclass(frozen=True)
class Fixed(LengthDistribution):
    value: int

    def __post_init__(self) -> None:
        if self.value < 1:
            raise ValueError(f"a fixed length must be >= 1, got {self.value}")

    def sample(self, rng: random.Random, index: int) -> int:
        return self.value

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "fixed", "value": self.value}


@dataclass(frozen=True)
class Uniform(LengthDistribution):
    """Integers in [lo, hi], both included."""

    lo: int
    hi: int

    def __post_init__(self) -> None:
        if not 1 <= self.lo <= self.hi:
            raise ValueError(f"uniform lengths need 1 <= lo <= hi, got {self.lo}..{self.hi}")

    def sample(self, rng: random.Random, index: int) -> int:
        return rng.randint(self.lo, self.hi)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "uniform", "lo": self.lo, "hi": self.hi}


@dataclass(frozen=True)
class LogNormal(LengthDistribution):
    """Log-normal with the given mean (tokens) and sigma of the underlying normal, rounded and clipped
    to [min, max]: mu = ln(mean) - sigma^2 / 2, so the unclipped mean is `mean`."""

    mean: float
    sigma: float
    min: int = 1
    max: int | None = None

    def __post_init__(self) -> None:
        if not self.mean > 0 or not self.sigma >= 0:
            raise ValueError(f"lognormal needs mean > 0 and sigma >= 0, got {self.mean}, {self.sigma}")
        if self.min < 1 or (self.max is not None and self.max < self.min):
            raise ValueError(f"lognormal clip range must have 1 <= min <= max, got [{self.min}, {self.max}]")

    def sample(self, rng: random.Random, index: int) -> int:
        mu = math.log(self.mean) - self.sigma * self.sigma / 2
        value = round(rng.lognormvariate(mu, self.sigma))
        value = max(self.min, value)
        return value if self.max is None else min(self.max, value)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "lognormal", "mean": self.mean, "sigma": self.sigma, "min": self.min, "max": self.max}


@dataclass(frozen=True)
class TraceRow:
    prompt_len: int | None
    output_len: int
    priority: str | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class Trace(LengthDistribution):
    """Recorded requests replayed in order (cycling): request i takes row i mod len(rows).

    As a prompt-length source it gives the row's prompt_len; `output` gives its output_len.
    """

    path: str
    rows: tuple[TraceRow, ...]
    field: str = "prompt_len"

    def sample(self, rng: random.Random, index: int) -> int:
        row = self.row(index)
        if self.field == "output_len":
            return row.output_len
        if row.prompt_len is None:
            raise ValueError(f"trace {self.path}: row {index % len(self.rows) + 1} has prompt text, not prompt_len")
        return row.prompt_len

    def row(self, index: int) -> TraceRow:
        return self.rows[index % len(self.rows)]

    def output(self) -> Trace:
        return Trace(self.path, self.rows, "output_len")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "trace", "path": self.path, "field": self.field, "rows": len(self.rows)}


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where} must be an integer >= 1, got {value!r}")
    return value


def parse_trace_lines(lines: list[str], path: str = "<trace>") -> Trace:
    """JSONL rows `{"prompt_len": int, "output_len": int, "priority"?: str}` or with `"prompt": text`
    in place of prompt_len; blank lines are skipped."""
    rows: list[TraceRow] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"trace {path} line {number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not JSON ({error})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object")
        prompt = data.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise ValueError(f"{where}: prompt must be text")
        if prompt is None and "prompt_len" not in data:
            raise ValueError(f"{where}: needs prompt_len or prompt")
        prompt_len = None if prompt is not None else _positive_int(data["prompt_len"], f"{where}: prompt_len")
        if "output_len" not in data:
            raise ValueError(f"{where}: needs output_len")
        priority = data.get("priority")
        if priority is not None and not isinstance(priority, str):
            raise ValueError(f"{where}: priority must be a class name")
        rows.append(TraceRow(prompt_len, _positive_int(data["output_len"], f"{where}: output_len"), priority, prompt))
    if not rows:
        raise ValueError(f"trace {path} has no requests")
    return Trace(path, tuple(rows))


def read_trace(path: str | Path) -> Trace:
    return parse_trace_lines(Path(path).read_text().splitlines(), str(path))
