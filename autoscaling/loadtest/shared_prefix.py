"""A multi-tenant workload whose tenants each reuse one long prompt prefix (a system prompt, a document):
the workload that prefix-aware routing is judged on.

Each tenant has its own prefix of random words and a few "conversations" (suffixes); request i goes to
a tenant drawn by the tenants' rate shares and to one of its conversations, and its prompt is that
prefix + suffix as text. The words are the synthetic checkpoints' `t<id>` (serve_app/synthetic_model.py),
one token each in their tokenizer, so lengths are exact there. Arrivals are any `ArrivalSchedule` at
the tenants' total rate: splitting a Poisson stream by independent draws gives each tenant a Poisson
stream at its share of the rate. Also the workload's ideal prefix-cache hit rate. Pure and seeded.
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from autoscaling.loadtest.arrivals import ArrivalSchedule
from autoscaling.loadtest.lengths import LengthDistribution
from autoscaling.loadtest.workload import PlannedRequest, SpecError, check_run_shape, normalized_mix
from serve_app.synthetic_model import token_word

# vLLM's default KV block on GPUs: prefix caching reuses whole blocks only.
DEFAULT_BLOCK_SIZE = 16
DEFAULT_CLASS = "default"


@dataclass(frozen=True)
class SharedPrefixSpec:
    """`conversations` suffixes per tenant, each repeated whenever drawn; None: every request has a
    suffix of its own. `tenant_weights`: each tenant's share of the rate (default equal).
    `api_keys`: one per tenant, sent as its bearer token (None: no key)."""

    arrival: ArrivalSchedule
    tenants: int
    prefix_len: int
    suffix_len: int
    output_len: LengthDistribution
    conversations: int | None = 8
    tenant_weights: tuple[float, ...] | None = None
    api_keys: tuple[str, ...] | None = None
    class_name: str = DEFAULT_CLASS
    duration_s: float | None = None
    num_requests: int | None = None
    max_concurrency: int | None = None
    seed: int = 0
    token_id_range: tuple[int, int] = (10, 1000)
    names: tuple[str, ...] = field(default=(), compare=False)  # tenant names; default tenant-<i>

    def __post_init__(self) -> None:
        if self.tenants < 1:
            raise SpecError(f"tenants must be >= 1, got {self.tenants}")
        if self.prefix_len < 0 or self.suffix_len < 0 or self.prefix_len + self.suffix_len < 1:
            raise SpecError(f"prefix_len and suffix_len must be >= 0 and not both 0, got "
                            f"{self.prefix_len} and {self.suffix_len}")
        if self.conversations is not None and self.conversations < 1:
            raise SpecError(f"conversations must be >= 1 (or none: a suffix per request), got {self.conversations}")
        if self.tenant_weights is not None:
            if len(self.tenant_weights) != self.tenants:
                raise SpecError(f"tenant rates: {len(self.tenant_weights)} given for {self.tenants} tenants")
            normalized_mix(dict(enumerate(self.tenant_weights)))
        if self.api_keys is not None and len(self.api_keys) != self.tenants:
            raise SpecError(f"tenant keys: {len(self.api_keys)} given for {self.tenants} tenants")
        if self.names and len(self.names) != self.tenants:
            raise SpecError(f"tenant names: {len(self.names)} given for {self.tenants} tenants")
        check_run_shape(self)

    def tenant_names(self) -> list[str]:
        return list(self.names) if self.names else [f"tenant-{i}" for i in range(self.tenants)]

    def weights(self) -> list[float]:
        return list(self.tenant_weights) if self.tenant_weights is not None else [1.0] * self.tenants

    def plan(self) -> list[PlannedRequest]:
        return plan_shared_prefix(self)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "shared_prefix", "arrival": self.arrival.to_dict(), "duration_s": self.duration_s,
                "num_requests": self.num_requests, "max_concurrency": self.max_concurrency,
                "tenants": self.tenants, "prefix_len": self.prefix_len, "suffix_len": self.suffix_len,
                "conversations": self.conversations, "tenant_weights": self.weights(),
                "tenant_names": self.tenant_names(), "with_api_keys": self.api_keys is not None,
                "class": self.class_name, "output_len": self.output_len.to_dict(), "seed": self.seed}


def _words(rng: random.Random, count: int, id_range: tuple[int, int]) -> list[int]:
    lo, hi = id_range
    return [rng.randrange(lo, hi) for _ in range(count)]


def prompt_text(token_ids: Sequence[int]) -> str:
    return " ".join(token_word(t) for t in token_ids)


def plan_shared_prefix(spec: SharedPrefixSpec) -> list[PlannedRequest]:
    """The run's requests in send order; request i's tenant, conversation and lengths depend only on
    the seed and i, so a rate sweep sends the same requests at each rate."""
    offsets = spec.arrival.offsets(random.Random(f"{spec.seed}:arrivals"), duration_s=spec.duration_s,
                                   num_requests=spec.num_requests)
    names, weights = spec.tenant_names(), spec.weights()
    prefixes = [_words(random.Random(f"{spec.seed}:prefix:{t}"), spec.prefix_len, spec.token_id_range)
                for t in range(spec.tenants)]
    suffixes: dict[tuple[int, int], list[int]] = {}
    choice_rng = random.Random(f"{spec.seed}:tenants")
    planned = []
    for index, offset in enumerate(offsets):
        tenant = choice_rng.choices(range(spec.tenants), weights)[0]
        if spec.conversations is None:
            suffix = _words(random.Random(f"{spec.seed}:request:{index}"), spec.suffix_len, spec.token_id_range)
            conversation = None
        else:
            conversation = choice_rng.randrange(spec.conversations)
            key = (tenant, conversation)
            if key not in suffixes:
                suffixes[key] = _words(random.Random(f"{spec.seed}:suffix:{tenant}:{conversation}"),
                                       spec.suffix_len, spec.token_id_range)
            suffix = suffixes[key]
        max_tokens = spec.output_len.sample(choice_rng, index)
        tokens = (*prefixes[tenant], *suffix)
        planned.append(PlannedRequest(index, offset, spec.class_name, prompt_text(tokens), len(tokens), max_tokens,
                                      tenant=names[tenant], api_key=spec.api_keys[tenant] if spec.api_keys else None,
                                      token_ids=tokens))
    return planned


def ideal_prefix_hit_rate(prompts: Iterable[Sequence[int]], block_size: int = DEFAULT_BLOCK_SIZE) -> float | None:
    """Share of prompt tokens a prefix cache of unlimited size would serve: the leading whole blocks
    of each prompt that an earlier prompt already had, at most (len - 1) // block_size blocks (vLLM
    computes a prompt's last token even on a full hit). Blocks are keyed by their whole prefix, as
    vLLM's block hashes chain. None for no prompt tokens."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    seen: set[int] = set()
    hit_tokens = total_tokens = 0
    for prompt in prompts:
        total_tokens += len(prompt)
        chain, hitting = 0, True
        cacheable_blocks = (len(prompt) - 1) // block_size if prompt else 0
        for block in range(len(prompt) // block_size):
            chain = hash((chain, tuple(prompt[block * block_size:(block + 1) * block_size])))
            if hitting and chain in seen and block < cacheable_blocks:
                hit_tokens += block_size
            else:
                hitting = False
            seen.add(chain)
    return hit_tokens / total_tokens if total_tokens else None


def planned_ideal_hit_rate(planned: Iterable[PlannedRequest], block_size: int = DEFAULT_BLOCK_SIZE) -> float | None:
    """`ideal_prefix_hit_rate` of planned requests in send order (those built from token ids)."""
    return ideal_prefix_hit_rate((p.token_ids for p in planned if p.token_ids is not None), block_size)


# ---- spec strings ----------------------------------------------------------------------------
def parse_tenant_rates(text: str, tenants: int) -> tuple[float, ...] | None:
    """`equal` (None), a list `10,1,...` (one per tenant), or `zipf:S` (tenant i's share ~ 1/(i+1)^S)."""
    text = text.strip()
    if text in ("", "equal"):
        return None
    if text.startswith("zipf:"):
        try:
            exponent = float(text[5:])
        except ValueError:
            raise SpecError(f"tenant rates {text!r}: zipf exponent is not a number") from None
        if not exponent >= 0:
            raise SpecError(f"tenant rates {text!r}: zipf exponent must be >= 0")
        return tuple(1.0 / (i + 1) ** exponent for i in range(tenants))
    try:
        weights = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise SpecError(f"tenant rates {text!r}: expected equal, W1,W2,... or zipf:S") from None
    if len(weights) != tenants:
        raise SpecError(f"tenant rates {text!r}: {len(weights)} values for {tenants} tenants")
    normalized_mix(dict(enumerate(weights)))
    return weights


def parse_tenant_keys(values: Sequence[str], tenants: int) -> tuple[str, ...] | None:
    """Keys from `--tenant-key` values: each a key or a comma-separated list; `@PATH`: a file with one
    key per line. None when none given; otherwise exactly one per tenant."""
    keys: list[str] = []
    for value in values:
        if value.startswith("@"):
            try:
                with open(value[1:]) as handle:
                    keys.extend(line.strip() for line in handle if line.strip())
            except OSError as error:
                raise SpecError(f"tenant keys {value!r}: {error}") from None
        else:
            keys.extend(part.strip() for part in value.split(",") if part.strip())
    if not keys:
        return None
    if len(keys) != tenants:
        raise SpecError(f"tenant keys: {len(keys)} given for {tenants} tenants")
    return tuple(keys)
