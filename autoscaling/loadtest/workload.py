"""A workload: arrivals, class mix and lengths -> a deterministic list of planned requests.

Prompts are random token ids (the completions API takes token-id lists), so prompt lengths are
exact, and every request sets `ignore_eos`, so output lengths are exact. Also the parsers of the
CLI's spec strings (`poisson:4`, `fixed:256`, `interactive=0.2,batch=0.8`, ...).
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from autoscaling.loadtest.arrivals import ArrivalSchedule, GammaArrivals, RampArrivals, StepArrivals
from autoscaling.loadtest.lengths import Fixed, LengthDistribution, LogNormal, Trace, Uniform, read_trace


class SpecError(ValueError):
    """A spec string or workload setting that cannot be used; the message names it."""


@dataclass(frozen=True)
class PlannedRequest:
    index: int
    send_offset_s: float
    class_name: str
    prompt: tuple[int, ...] | str  # token ids, or a trace's text
    prompt_len: int | None          # None for text prompts (the server's usage tells)
    max_tokens: int
    tenant: str | None = None       # who sends it (multi-tenant workloads); stats are kept per tenant
    api_key: str | None = None      # the tenant's bearer token; None: the client's per-class keys
    token_ids: tuple[int, ...] | None = None  # a text prompt's words as token ids (prefix-hit maths)


@dataclass(frozen=True)
class WorkloadSpec:
    arrival: ArrivalSchedule
    class_mix: dict[str, float]
    prompt_len: LengthDistribution
    output_len: LengthDistribution
    duration_s: float | None = None
    num_requests: int | None = None
    max_concurrency: int | None = None
    seed: int = 0
    token_id_range: tuple[int, int] = (10, 1000)  # low ids are special tokens in most vocabularies

    def __post_init__(self) -> None:
        check_run_shape(self)
        normalized_mix(self.class_mix)

    def plan(self) -> list[PlannedRequest]:
        return plan_requests(self)

    def to_dict(self) -> dict[str, Any]:
        return {"arrival": self.arrival.to_dict(), "duration_s": self.duration_s, "num_requests": self.num_requests,
                "max_concurrency": self.max_concurrency, "class_mix": dict(self.class_mix),
                "prompt_len": self.prompt_len.to_dict(), "output_len": self.output_len.to_dict(), "seed": self.seed}


def check_run_shape(spec: Any) -> None:
    """What every workload spec needs: an end, a sane concurrency cap and token id range."""
    if spec.duration_s is None and spec.num_requests is None and spec.arrival.natural_duration_s() is None:
        raise SpecError("give a duration or a number of requests (or a step/ramp schedule)")
    if spec.max_concurrency is not None and spec.max_concurrency < 1:
        raise SpecError(f"max_concurrency must be >= 1, got {spec.max_concurrency}")
    lo, hi = spec.token_id_range
    if not 0 <= lo < hi:
        raise SpecError(f"token_id_range must be 0 <= lo < hi, got {spec.token_id_range}")


def normalized_mix(mix: dict[str, float]) -> dict[str, float]:
    if not mix:
        raise SpecError("the class mix is empty")
    if any(not w >= 0 or math.isinf(w) for w in mix.values()) or sum(mix.values()) <= 0:
        raise SpecError(f"class mix weights must be finite, >= 0 and not all 0: {mix}")
    total = sum(mix.values())
    return {name: weight / total for name, weight in mix.items()}


def plan_requests(spec: WorkloadSpec) -> list[PlannedRequest]:
    """The run's requests in send order. Request i's class, lengths and prompt depend only on the
    seed and i (not on the arrivals), so a rate sweep sends the same requests at each rate."""
    offsets = spec.arrival.offsets(random.Random(f"{spec.seed}:arrivals"), duration_s=spec.duration_s,
                                   num_requests=spec.num_requests)
    mix = normalized_mix(spec.class_mix)
    names, weights = list(mix), list(mix.values())
    content_rng = random.Random(f"{spec.seed}:content")
    tokens = np.random.default_rng(spec.seed)
    trace = spec.prompt_len if isinstance(spec.prompt_len, Trace) else None
    planned = []
    for index, offset in enumerate(offsets):
        class_name = content_rng.choices(names, weights)[0]
        row = trace.row(index) if trace is not None else None
        if row is not None and row.priority is not None:
            class_name = row.priority
        max_tokens = spec.output_len.sample(content_rng, index)
        if row is not None and row.prompt is not None:
            prompt: tuple[int, ...] | str = row.prompt
            prompt_len = None
        else:
            prompt_len = spec.prompt_len.sample(content_rng, index)
            lo, hi = spec.token_id_range
            prompt = tuple(int(t) for t in tokens.integers(lo, hi, size=prompt_len))
        planned.append(PlannedRequest(index, offset, class_name, prompt, prompt_len, max_tokens))
    return planned


# ---- spec strings ----------------------------------------------------------------------------
def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SpecError(f"{what}: {text!r} is not a number") from None


def _integer(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SpecError(f"{what}: {text!r} is not an integer") from None


def _options(parts: list[str], allowed: set[str], what: str) -> dict[str, str]:
    options = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or key not in allowed:
            raise SpecError(f"{what}: unknown option {part!r} (allowed: {sorted(allowed)})")
        options[key] = value
    return options


def parse_arrival(text: str) -> ArrivalSchedule:
    """`poisson:RATE` (RATE may be inf), `gamma:RATE:cv=CV`, `step:DURxRATE,DURxRATE,...`,
    `ramp:START_RATE:END_RATE:DURATION`."""
    kind, _, rest = text.partition(":")
    parts = rest.split(":") if rest else []
    what = f"arrival {text!r}"
    try:
        if kind == "poisson" and len(parts) == 1:
            return GammaArrivals(_number(parts[0], what), 1.0)
        if kind == "gamma" and len(parts) in (1, 2):
            cv = _options(parts[1:], {"cv"}, what).get("cv", "1")
            return GammaArrivals(_number(parts[0], what), _number(cv, what))
        if kind == "step" and len(parts) == 1:
            segments = []
            for segment in parts[0].split(","):
                duration, sep, rate = segment.partition("x")
                if not sep:
                    raise SpecError(f"{what}: segment {segment!r} is not DURATIONxRATE")
                segments.append((_number(duration, what), _number(rate, what)))
            return StepArrivals(tuple(segments))
        if kind == "ramp" and len(parts) == 3:
            return RampArrivals(*(_number(p, what) for p in parts))
    except SpecError:
        raise
    except ValueError as error:
        raise SpecError(f"{what}: {error}") from None
    raise SpecError(f"{what}: expected poisson:RATE, gamma:RATE:cv=CV, step:DURxRATE,... or "
                    "ramp:START:END:DURATION")


def parse_length(text: str) -> LengthDistribution:
    """`fixed:N`, `uniform:LO:HI`, `lognormal:MEAN:SIGMA[:min=N][:max=N]`, `trace:PATH.jsonl`."""
    kind, _, rest = text.partition(":")
    parts = rest.split(":") if rest else []
    what = f"length {text!r}"
    try:
        if kind == "fixed" and len(parts) == 1:
            return Fixed(_integer(parts[0], what))
        if kind == "uniform" and len(parts) == 2:
            return Uniform(_integer(parts[0], what), _integer(parts[1], what))
        if kind == "lognormal" and len(parts) >= 2:
            options = _options(parts[2:], {"min", "max"}, what)
            return LogNormal(_number(parts[0], what), _number(parts[1], what),
                             _integer(options.get("min", "1"), what),
                             _integer(options["max"], what) if "max" in options else None)
        if kind == "trace" and rest:
            return read_trace(rest)
    except SpecError:
        raise
    except (ValueError, OSError) as error:
        raise SpecError(f"{what}: {error}") from None
    raise SpecError(f"{what}: expected fixed:N, uniform:LO:HI, lognormal:MEAN:SIGMA[:min=N][:max=N] or trace:PATH")


def parse_output_length(text: str, prompt_len: LengthDistribution) -> LengthDistribution:
    """Like parse_length; `trace` (no path) reuses the prompt-length trace's output lengths."""
    if text == "trace":
        if not isinstance(prompt_len, Trace):
            raise SpecError("output length 'trace' needs a trace prompt length (trace:PATH)")
        return prompt_len.output()
    parsed = parse_length(text)
    return parsed.output() if isinstance(parsed, Trace) else parsed


def parse_mix(text: str) -> dict[str, float]:
    """`interactive=0.2,batch=0.8`, a JSON object, or one class name (all requests in it)."""
    text = text.strip()
    if text.startswith("{"):
        try:
            mix = {str(k): float(v) for k, v in json.loads(text).items()}
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as error:
            raise SpecError(f"class mix {text!r}: {error}") from None
    elif "=" not in text:
        mix = {text: 1.0}
    else:
        mix = {}
        for part in text.split(","):
            name, sep, weight = part.partition("=")
            if not sep or not name.strip():
                raise SpecError(f"class mix {text!r}: {part!r} is not CLASS=WEIGHT")
            mix[name.strip()] = _number(weight, f"class mix {text!r}")
    normalized_mix(mix)
    return mix


def parse_slo(text: str) -> tuple[str, float | None, float | None]:
    """`CLASS=TTFT_S,TPOT_S`; either value may be `-` (no target)."""
    name, sep, values = text.partition("=")
    parts = values.split(",")
    if not sep or not name or len(parts) != 2:
        raise SpecError(f"slo {text!r}: expected CLASS=TTFT_S,TPOT_S")
    ttft, tpot = (None if p.strip() == "-" else _number(p, f"slo {text!r}") for p in parts)
    if (ttft is not None and ttft <= 0) or (tpot is not None and tpot <= 0):
        raise SpecError(f"slo {text!r}: targets must be positive")
    return name, ttft, tpot
