"""Request size limits: prompt tokens, output tokens, message and stop-sequence counts (pure).

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
    max_output_tokens: int
    max_messages: int
    max_stop_sequences: int

    @classmethod
    def from_config(cls, config: AppConfig) -> RequestLimits:
        """Limits from `http.*`; an empty token limit means the model's context."""
        context = config.engine.max_model_len
        http = config.http
        return cls(
            context_tokens=context,
            max_prompt_tokens=min(http.max_prompt_tokens or context, context - 1),
            max_output_tokens=min(http.max_output_tokens or context, context),
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

    def max_tokens(self, requested: int | None, prompt_tokens: int, *, prompt_param: str = "prompt",
                   max_tokens_param: str = "max_tokens") -> int:
        """Tokens to generate: `requested`, or the most allowed; 400 past the prompt, output or context limit."""
        if prompt_tokens >= self.context_tokens:
            raise ApiError(400, f"{prompt_param} is {prompt_tokens} tokens; the model's context is "
                           f"{self.context_tokens} tokens", param=prompt_param, code="context_length_exceeded")
        if prompt_tokens > self.max_prompt_tokens:
            raise ApiError(400, f"{prompt_param} is {prompt_tokens} tokens; the limit is {self.max_prompt_tokens}",
                           param=prompt_param, code="prompt_too_long")
        room = self.context_tokens - prompt_tokens
        if requested is None:
            return min(room, self.max_output_tokens)
        if requested <= 0:
            raise ApiError(400, f"{max_tokens_param} must be at least 1, got {requested}", param=max_tokens_param)
        if requested > self.max_output_tokens and self.max_output_tokens < room:
            raise ApiError(400, f"{max_tokens_param}={requested} is above the limit of {self.max_output_tokens}",
                           param=max_tokens_param, code="max_tokens_too_large")
        if requested > room:
            raise ApiError(400, f"{max_tokens_param}={requested} plus the {prompt_tokens}-token {prompt_param} "
                           f"exceeds the model's context of {self.context_tokens} tokens",
                           param=max_tokens_param, code="context_length_exceeded")
        return requested
