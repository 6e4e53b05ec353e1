"""KV sizing by occupancy: how many sequences fit when each is seen at a random point of its decode.

`max_num_seqs_without_preemption` budgets every sequence at p95 prompt + p95 output. At any instant
the sequences in flight are part way through their decode and most are shorter than p95, so their
sum concentrates near N x mean; this module sizes N so that the sum overflows the KV cache with a
small, named probability (normal approximation of a sum of N independent footprints).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Iterable, Literal, get_args

from serve_app.memory.concurrency import max_num_seqs_without_preemption, usable_kv_blocks
from serve_app.memory.presets import UseCasePreset

# How the engine's max_num_seqs is sized: every sequence at p95 lengths, or by occupancy.
KvSizing = Literal["worst_case", "occupancy"]
KV_SIZINGS: tuple[KvSizing, ...] = get_args(KvSizing)
# The chance that N sequences at random instants together need more KV than there is, i.e. that
# vLLM preempts; the router's window (`next_window_cap`) corrects the rest at run time.
OVERFLOW_PROBABILITY = 0.01


@dataclass(frozen=True)
class FootprintMoments:
    """Mean and standard deviation of the KV tokens (whole blocks) one in-flight sequence holds."""

    mean_tokens: float
    std_tokens: float

    def __post_init__(self) -> None:
        if not self.mean_tokens > 0 or not self.std_tokens >= 0:
            raise ValueError(f"need mean_tokens > 0 and std_tokens >= 0, got {self.mean_tokens}, {self.std_tokens}")

    @classmethod
    def from_requests(cls, pairs: Iterable[tuple[int, int]], block_size: int,
                      extra_tokens_per_seq: int = 0) -> FootprintMoments:
        """From observed (prompt, output) lengths: each request weighted by its output length, the
        steps it spends in flight (a long request is seen in flight more often)."""
        weight = first = second = 0.0
        for prompt, output in pairs:
            if prompt < 0 or output < 1:
                raise ValueError(f"need prompt >= 0 and output >= 1, got ({prompt}, {output})")
            # Decode step k uniform in [0, output): p + k has mean p + (o-1)/2 and variance (o^2-1)/12.
            step_mean = prompt + (output - 1) / 2
            weight += output
            first += output * step_mean
            second += output * (step_mean * step_mean + (output * output - 1) / 12)
        if weight == 0:
            raise ValueError("no requests to size from")
        return _with_blocks(first / weight, second / weight, block_size, extra_tokens_per_seq)

    @classmethod
    def from_preset(cls, preset: UseCasePreset, block_size: int, extra_tokens_per_seq: int = 0) -> FootprintMoments:
        """From the preset's log-normal prompt and output lengths (mean and p95 each, independent).

        Closed form from the log-normal's raw moments E[X^n] = mean^n exp(n(n-1) sigma^2 / 2); the tail
        is not cut at max_model_len, which only overstates the footprint.
        """
        def raw(mean: float, sigma: float, n: int) -> float:
            return mean**n * math.exp(n * (n - 1) * sigma * sigma / 2)

        p1, p2 = (raw(preset.prompt_len_mean, preset.prompt_sigma, n) for n in (1, 2))
        o1, o2, o3 = (raw(preset.output_len_mean, preset.output_sigma, n) for n in (1, 2, 3))
        # The sums of `from_requests` in expectation: E[O (P + (O-1)/2)] and E[O ((P + (O-1)/2)^2 + (O^2-1)/12)].
        first = o1 * p1 + (o2 - o1) / 2
        second = (o1 * p2 + p1 * (o2 - o1) + (o3 - 2 * o2 + o1) / 4 + (o3 - o1) / 12)
        return _with_blocks(first / o1, second / o1, block_size, extra_tokens_per_seq)


def _with_blocks(mean: float, second_moment: float, block_size: int, extra_tokens_per_seq: int) -> FootprintMoments:
    if block_size <= 0 or extra_tokens_per_seq < 0:
        raise ValueError("block_size must be positive and extra_tokens_per_seq non-negative")
    variance = max(second_moment - mean * mean, 0.0)
    # vLLM allocates whole blocks, so a sequence's last block is partly empty; its fill is spread
    # evenly over the block's slots, so on average half a block is wasted (uniform rounding error:
    # mean block_size/2, variance block_size^2/12).
    return FootprintMoments(mean + extra_tokens_per_seq + block_size / 2,
                            math.sqrt(variance + block_size * block_size / 12))


def max_concurrency_at_overflow(kv_tokens: int, block_size: int, moments: FootprintMoments,
                                overflow_probability: float = OVERFLOW_PROBABILITY,
                                worst_case: int | None = None) -> int:
    """The largest N with N x mean + z sqrt(N) x std <= usable KV tokens, z the normal quantile of
    1 - `overflow_probability`.

    Never above usable // mean (nor one block per sequence), never below `worst_case` (the p95 figure
    for the same inputs, which cannot overflow) when given.
    """
    if block_size <= 0 or kv_tokens < 0:
        raise ValueError("block_size must be positive and kv_tokens non-negative")
    if not 0 < overflow_probability <= 0.5:
        raise ValueError(f"overflow_probability must be in (0, 0.5], got {overflow_probability}")
    usable_blocks = usable_kv_blocks(kv_tokens, block_size)
    usable = usable_blocks * block_size
    z = NormalDist().inv_cdf(1 - overflow_probability)
    mean, std = moments.mean_tokens, moments.std_tokens
    # Root of mean x^2 + z std x - usable = 0 in x = sqrt(N).
    root = (-z * std + math.sqrt((z * std) ** 2 + 4 * mean * usable)) / (2 * mean)
    n = math.floor(root * root)
    while n > 0 and n * mean + z * math.sqrt(n) * std > usable:  # float rounding at the boundary
        n -= 1
    n = min(n, math.floor(usable / mean), usable_blocks)
    return max(n, worst_case) if worst_case is not None else n


def planned_max_num_seqs(kv_tokens: int, block_size: int, preset: UseCasePreset, kv_sizing: KvSizing,
                         extra_tokens_per_seq: int = 0) -> int:
    """max_num_seqs for the preset's lengths by `kv_sizing`, before the preset's and the sampler's caps."""
    if kv_sizing not in KV_SIZINGS:
        raise ValueError(f"unknown kv_sizing {kv_sizing!r}; known: {', '.join(KV_SIZINGS)}")
    worst = max_num_seqs_without_preemption(kv_tokens, preset.prompt_len_mean, preset.prompt_len_p95,
                                            preset.output_len_mean, preset.output_len_p95, block_size,
                                            extra_tokens_per_seq=extra_tokens_per_seq)
    if kv_sizing == "worst_case":
        return worst
    moments = FootprintMoments.from_preset(preset, block_size, extra_tokens_per_seq)
    return max_concurrency_at_overflow(kv_tokens, block_size, moments, OVERFLOW_PROBABILITY, worst_case=worst)
