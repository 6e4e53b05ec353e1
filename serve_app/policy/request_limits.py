"""Request size limits of this server beyond vLLM's own: output budget, message and stop-sequence
counts (pure); the prompt-token limit is checked where the prompt is tokenized, on the replica.

Each check raises an OpenAI-shaped 400 `ApiError` whose `param` names the offending field; the
body-bytes limit (413) is enforced before parsing, in the ingress.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from serve_app.openai_api import ApiError

if TYPE_CHECKING:
    from serve_app.config import AppConfig


@dataclass(frozen=True)
class RequestLimits:
    context_tokens: int  # the model's context: prompt + output tokens
    max_prompt_tokens: int
    max_output_tokens: int | None  # None: not configured, vLLM alone judges the budget
    max_messages: int
    max_stop_sequences: int

    @classmethod
    def from_config(cls, config: AppConfig) -> RequestLimits:
        """Limits from `http.*`; an empty prompt limit is the model's context, an empty output cap is none."""
        context = config.engine.max_model_len
        http = config.http
        return cls(
            context_tokens=context,
            max_prompt_tokens=min(http.max_prompt_tokens or context, context - 1),
            max_output_tokens=min(http.max_output_tokens, context) if http.max_output_tokens else None,
            max_messages=http.max_messages,
            max_stop_sequences=http.max_stop_sequences,
        )

    def check_counts(self, *, num_messages: int | None = None, num_stop: int = 0) -> None:
        """Chat messages and stop strings within their limits (checked before tokenizing)."""
        if num_messages is not None and num_messages > self.max_messages:
            raise ApiError(400, f"messages has {num_messages} entries; the limit is {self.max_messages}",
                           param="messages", code="too_many_messages")
        if num_stop > self.max_stop_sequences:
            raise ApiError(400, f"stop has {num_stop} sequences; the limit is {self.max_stop_sequences}",
                           param="stop", code="too_many_stop_sequences")

    def check_output_budget(self, field: str | None, requested: int | None) -> None:
        """A named output budget within `http.max_output_tokens` (vLLM judges it against the context;
        an unnamed one is capped on the replica)."""
        if (self.max_output_tokens is not None and field is not None and requested is not None
                and requested > self.max_output_tokens):
            raise ApiError(400, f"{field}={requested} is above this server's limit of {self.max_output_tokens}",
                           param=field, code="max_tokens_too_large")
