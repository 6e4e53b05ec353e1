"""Engine step time of a vLLM replica as an affine function of what the step computes.

One engine step runs every decoding sequence one token and up to `max_num_batched_tokens` of
prefill (chunked prefill). Its time is modelled as

    t = base_s + per_decode_seq_s * decode_seqs + per_prefill_token_s * prefill_tokens
        + per_context_token_s * context_tokens

(`context_tokens`: KV tokens the step's attention reads). A latency made of whole steps is a sum
of such terms, so it is affine in the coefficients too: `fit_step_model` fits them by
non-negative least squares to latencies expressed as summed step features.
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Order of the coefficients in a feature row; the last one is the per-request frontend overhead
# (HTTP, tokenisation, detokenisation) that a measured TTFT adds on top of engine steps.
FEATURES = ("base_s", "per_decode_seq_s", "per_prefill_token_s", "per_context_token_s", "frontend_overhead_s")


@dataclass(frozen=True)
class StepFeatures:
    """What one step (or a sum of steps) computes; `requests` counts frontend overheads included."""

    steps: float = 0.0
    decode_seqs: float = 0.0
    prefill_tokens: float = 0.0
    context_tokens: float = 0.0
    requests: float = 0.0

    def __add__(self, other: StepFeatures) -> StepFeatures:
        return StepFeatures(self.steps + other.steps, self.decode_seqs + other.decode_seqs,
                            self.prefill_tokens + other.prefill_tokens, self.context_tokens + other.context_tokens,
                            self.requests + other.requests)

    def scaled(self, factor: float) -> StepFeatures:
        return StepFeatures(self.steps * factor, self.decode_seqs * factor, self.prefill_tokens * factor,
                            self.context_tokens * factor, self.requests * factor)

    def row(self) -> list[float]:
        return [self.steps, self.decode_seqs, self.prefill_tokens, self.context_tokens, self.requests]


@dataclass(frozen=True)
class StepModel:
    """Fitted coefficients (seconds per unit) plus where they came from."""

    base_s: float
    per_decode_seq_s: float
    per_prefill_token_s: float
    per_context_token_s: float
    frontend_overhead_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def step_time_s(self, decode_seqs: int, prefill_tokens: int, context_tokens: int) -> float:
        return (self.base_s + self.per_decode_seq_s * decode_seqs + self.per_prefill_token_s * prefill_tokens
                + self.per_context_token_s * context_tokens)

    def predict(self, features: StepFeatures) -> float:
        """Seconds taken by the steps (and frontend overheads) that `features` sums."""
        return float(np.dot(self.coefficients(), features.row()))

    def coefficients(self) -> np.ndarray:
        return np.array([getattr(self, name) for name in FEATURES])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepModel:
        return cls(**{name: float(data[name]) for name in FEATURES}, meta=dict(data.get("meta", {})))

    @classmethod
    def load(cls, path: str | Path) -> StepModel:
        return cls.from_dict(json.loads(Path(path).read_text()))


def nonnegative_least_squares(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin ||a x - b|| with x >= 0, exactly, by trying every support set (few unknowns only)."""
    n = a.shape[1]
    if n > 10:
        raise ValueError(f"exhaustive NNLS is for a handful of unknowns, got {n}")
    best, best_residual = np.zeros(n), float(np.sum(b ** 2))
    for size in range(1, n + 1):
        for support in itertools.combinations(range(n), size):
            cols = list(support)
            x_s, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
            if np.any(x_s < 0):
                continue
            x = np.zeros(n)
            x[cols] = x_s
            residual = float(np.sum((a @ x - b) ** 2))
            if residual < best_residual - 1e-18:
                best, best_residual = x, residual
    return best


def fit_step_model(observations: Sequence[tuple[StepFeatures, float]], *, relative: bool = True,
                   fixed: dict[str, float] | None = None, meta: dict[str, Any] | None = None) -> StepModel:
    """Fit the coefficients to (summed step features, measured seconds) pairs.

    `relative` weights each observation by 1/measured so a 4 ms TPOT counts as much as a 9 s
    latency. `fixed` pins coefficients (e.g. one the data cannot separate) and fits the rest.
    """
    if not observations:
        raise ValueError("no observations to fit")
    fixed = dict(fixed or {})
    unknown = [name for name in FEATURES if name not in fixed]
    rows = np.array([f.row() for f, _ in observations], dtype=float)
    y = np.array([seconds for _, seconds in observations], dtype=float)
    if np.any(y <= 0):
        raise ValueError("measured latencies must be > 0")
    fixed_vec = np.array([fixed.get(name, 0.0) for name in FEATURES])
    target = y - rows @ fixed_vec
    a = rows[:, [FEATURES.index(name) for name in unknown]]
    weights = 1.0 / y if relative else np.ones_like(y)
    x = nonnegative_least_squares(a * weights[:, None], target * weights)
    values = dict(fixed)
    values.update(zip(unknown, (float(v) for v in x)))
    return StepModel(**values, meta=dict(meta or {}))
