"""What speculative decoding costs a replica: draft weights, KV per token and per sequence, and
tokens per decode step. n-gram drafting costs no memory, only step tokens and a few KV slots."""

from __future__ import annotations

from dataclasses import dataclass

from serve_app.memory.estimates import kv_bytes_per_token, weight_bytes
from serve_app.memory.shape import ModelShape


@dataclass(frozen=True)
class SpeculationCost:
    """Zero `num_speculative_tokens`: speculation off. `uses_draft_model`: drafts come from a model
    (else n-gram lookup); `draft`: its shape, which the memory terms need (the token terms do not)."""

    num_speculative_tokens: int = 0
    uses_draft_model: bool = False
    draft: ModelShape | None = None

    def __post_init__(self) -> None:
        if self.num_speculative_tokens < 0:
            raise ValueError("num_speculative_tokens must not be negative")
        if self.uses_draft_model and self.num_speculative_tokens == 0:
            raise ValueError("a draft model drafts at least one token per step")
        if self.draft is not None and not self.uses_draft_model:
            raise ValueError("a draft shape without uses_draft_model")

    @property
    def tokens_per_decode_step(self) -> int:
        """A decoding sequence's share of a step: its next token plus the drafts verified with it
        (vLLM's scheduler schedules 1 + num_spec_tokens for it)."""
        return 1 + self.num_speculative_tokens

    @property
    def extra_kv_tokens_per_sequence(self) -> int:
        """KV slots a sequence holds beyond its own tokens: the unverified drafts (allocate_slots of
        1 + k), and for a draft model k lookahead slots it writes past them
        (vllm/config/vllm.py VllmConfig.num_lookahead_tokens)."""
        lookahead = self.num_speculative_tokens if self.uses_draft_model else 0
        return self.num_speculative_tokens + lookahead

    def draft_weight_bytes(self) -> int:
        return weight_bytes(self.draft).total if self.draft is not None else 0

    def draft_kv_bytes_per_token(self, kv_cache_dtype: str = "auto") -> int:
        """vLLM sizes KV blocks over every attention layer, the draft's included, so a token's KV is
        the target's plus the draft's."""
        return kv_bytes_per_token(self.draft, kv_cache_dtype) if self.draft is not None else 0


NO_SPECULATION = SpeculationCost()
