"""Use-case presets: latency SLOs plus the request-length assumptions used for sizing."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

_Z95 = NormalDist().inv_cdf(0.95)


@dataclass(frozen=True)
class UseCasePreset:
    """SLO targets and length distribution (mean/p95, in tokens) for one workload.

    ``max_num_seqs_cap`` bounds the decode batch and ``prefill_chunk_cap`` the prefill chunk per step,
    to protect TPOT; None (every built-in preset): the KV cache bounds the batch and a step holds the
    tokens its activation memory was sized for, and the router's window guards TPOT at run time.
    """

    name: str
    ttft_s: float
    tpot_s: float
    prompt_len_mean: int
    prompt_len_p95: int
    output_len_mean: int
    output_len_p95: int
    max_num_seqs_cap: int | None = None
    prefill_chunk_cap: int | None = None

    def __post_init__(self) -> None:
        if self.ttft_s <= 0 or self.tpot_s <= 0:
            raise ValueError(f"{self.name}: SLO targets must be positive")
        if not 0 < self.prompt_len_mean <= self.prompt_len_p95:
            raise ValueError(f"{self.name}: need 0 < prompt mean <= p95")
        if not 0 < self.output_len_mean <= self.output_len_p95:
            raise ValueError(f"{self.name}: need 0 < output mean <= p95")
        if self.max_num_seqs_cap is not None and self.max_num_seqs_cap <= 0:
            raise ValueError(f"{self.name}: max_num_seqs_cap must be positive")
        if self.prefill_chunk_cap is not None and self.prefill_chunk_cap <= 0:
            raise ValueError(f"{self.name}: prefill_chunk_cap must be positive")

    @property
    def prompt_sigma(self) -> float:
        """Sigma of the log-normal prompt lengths with this mean and p95 (`lognormal_sigma`)."""
        return lognormal_sigma(self.prompt_len_mean, self.prompt_len_p95)

    @property
    def output_sigma(self) -> float:
        return lognormal_sigma(self.output_len_mean, self.output_len_p95)

    @property
    def p95_sequence_len(self) -> int:
        """Context a p95 request reaches; must fit in max_model_len."""
        return self.prompt_len_p95 + self.output_len_p95


# The `interactive` priority class's default SLO reads these (serve_app/config.py): one definition.
# TPOT 0.1 s (10 tokens/s, faster than people read) is the SLO the service documents and its capacity
# sweeps were judged against; the measured H100 profile's p99 TPOT stays under 0.03 s up to batch 256,
# so sizing from the profile still stops at TTFT (batch 64) as it did with 0.05 s.
INTERACTIVE = UseCasePreset(
    name="interactive", ttft_s=0.5, tpot_s=0.1,
    prompt_len_mean=512, prompt_len_p95=1536, output_len_mean=256, output_len_p95=512,
)
MIXED = UseCasePreset(
    name="mixed", ttft_s=1.0, tpot_s=0.08,
    prompt_len_mean=1024, prompt_len_p95=3072, output_len_mean=384, output_len_p95=1024,
)
BATCH = UseCasePreset(
    name="batch", ttft_s=30.0, tpot_s=0.25,
    prompt_len_mean=1024, prompt_len_p95=3072, output_len_mean=512, output_len_p95=1024,
)
LONG_FORM = UseCasePreset(
    name="long-form", ttft_s=2.0, tpot_s=0.06,
    prompt_len_mean=1024, prompt_len_p95=3072, output_len_mean=2048, output_len_p95=4096,
)

PRESETS: dict[str, UseCasePreset] = {p.name: p for p in (INTERACTIVE, MIXED, BATCH, LONG_FORM)}


def get_preset(name: str) -> UseCasePreset:
    """Look up a preset by name (``long_form`` is accepted for ``long-form``)."""
    preset = PRESETS.get(name.strip().lower().replace("_", "-"))
    if preset is None:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return preset


def lognormal_sigma(mean: float, p95: float) -> float:
    """Sigma of the log-normal whose mean is `mean` and whose 95th percentile is `p95`.

    With mu = ln(mean) - sigma^2/2 (the parametrisation of the load driver's `LogNormal`),
    p95 = exp(mu + z95 sigma) gives sigma^2/2 - z95 sigma + ln(p95/mean) = 0; the smaller root is
    the one whose median lies below the mean. No log-normal has p95/mean above exp(z95^2/2) (~3.87).
    """
    if not 0 < mean <= p95:
        raise ValueError(f"need 0 < mean <= p95, got mean={mean} p95={p95}")
    discriminant = _Z95 * _Z95 - 2 * math.log(p95 / mean)
    if discriminant < 0:
        raise ValueError(f"no log-normal has mean {mean} and p95 {p95} (p95/mean above {math.exp(_Z95**2 / 2):.2f})")
    return _Z95 - math.sqrt(discriminant)
