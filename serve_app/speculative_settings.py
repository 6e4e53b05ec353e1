"""`engine.speculative`: speculative decoding by n-gram prompt lookup or a draft model, and the
`speculative_config` dict vLLM takes for it.

The dict uses only keys that vLLM 0.26 (GPU host) and 0.32 (CPU build here) both accept:
`method`, `num_speculative_tokens`, `prompt_lookup_min`, `prompt_lookup_max`, `model`
(`vllm/config/speculative.py` SpeculativeConfig). A draft's quantization is left to vLLM, which
reads it from the draft checkpoint's `quantization_config` as it does for the target.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from serve_app.strict_model import StrictModel


class SpeculativeSettings(StrictModel):
    method: Literal["ngram", "draft_model"] = Field(
        description="`ngram`: drafts are the tokens that followed the latest matching n-gram earlier in the "
        "prompt or output (no extra weights, no extra KV). `draft_model`: a small model with the target's "
        "tokenizer drafts (its weights and KV cache come out of the memory budget).",
    )
    num_speculative_tokens: int = Field(
        gt=0, le=16, description="Tokens drafted per step and verified by the target in one forward pass; each "
        "decoding sequence then takes 1 + this many tokens of a step's `max_num_batched_tokens`.",
    )
    prompt_lookup_min: int | None = Field(
        None, ge=1, description="ngram: shortest n-gram matched. Empty: `prompt_lookup_max` (vLLM's rule).")
    prompt_lookup_max: int | None = Field(
        None, ge=1, description="ngram: longest n-gram matched. Empty: `prompt_lookup_min`; both empty: vLLM's "
        "default (5).")
    model: str | None = Field(
        None, description="draft_model: directory of the draft checkpoint (same tokenizer and vocabulary as the "
        "target). Give this or `synthetic_shape`.")
    synthetic_shape: str | None = Field(
        None, description="draft_model: a synthetic checkpoint shape (`serve_app.synthetic_model.SHAPES`), generated "
        "under `model.cache_dir` like the main model. Its vocabulary must be the target's (e.g. `tiny` drafts for "
        "`tiny`, `llama2-7b-draft` for `llama2-7b`); random weights agree with the target rarely.")

    @model_validator(mode="after")
    def _fields_fit_the_method(self) -> SpeculativeSettings:
        if self.method == "ngram":
            for name in ("model", "synthetic_shape"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only for method draft_model (n-gram drafts need no model)")
            low, high = self.prompt_lookup_min, self.prompt_lookup_max
            if low is not None and high is not None and low > high:
                raise ValueError(f"prompt_lookup_min ({low}) must not exceed prompt_lookup_max ({high})")
        else:
            for name in ("prompt_lookup_min", "prompt_lookup_max"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only for method ngram")
            if (self.model is None) == (self.synthetic_shape is None):
                raise ValueError("model / synthetic_shape: method draft_model needs exactly one of them")
        return self

    @property
    def uses_draft_model(self) -> bool:
        return self.method == "draft_model"

    def draft_path(self, cache_dir: str | Path) -> Path | None:
        """The draft checkpoint's directory (a synthetic one under `cache_dir`); None for n-gram."""
        if self.model is not None:
            return Path(self.model)
        if self.synthetic_shape is not None:
            return Path(cache_dir) / self.synthetic_shape
        return None

    def vllm_config(self, cache_dir: str | Path) -> dict[str, Any]:
        """vLLM's `speculative_config` engine argument."""
        config: dict[str, Any] = {"method": self.method, "num_speculative_tokens": self.num_speculative_tokens}
        if self.method == "ngram":
            for name in ("prompt_lookup_min", "prompt_lookup_max"):
                if getattr(self, name) is not None:
                    config[name] = getattr(self, name)
        else:
            config["model"] = str(self.draft_path(cache_dir))
        return config
