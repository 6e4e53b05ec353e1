"""OpenAI-compatible request models, error bodies and response builders (no Ray, no vLLM)."""
from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ApiError(Exception):
    """A client error answered in OpenAI's error shape; `param` names the offending field."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 error_type: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.error_type = error_type
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}


# vLLM seeds a torch generator per request: a seed outside int64 fails inside the engine.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
StopString = Annotated[str, Field(min_length=1)]  # vLLM refuses empty stop strings


class _Request(BaseModel):
    # Unknown OpenAI fields (logprobs, user, ...) are accepted and ignored, as OpenAI's SDKs send them.
    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(None, description="Tokens to generate; default: the rest of the context.")
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=1, description="Only one choice per request is supported.")
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: StopString | list[StopString] | None = None
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX)
    priority: str | None = Field(None, description="Priority class; overrides the x-priority header.")
    ignore_eos: bool = Field(False, description="vLLM extension: keep generating past end-of-sequence.")
    skip_special_tokens: bool = Field(True, description="vLLM extension: leave special tokens out of the text.")

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def include_usage_in_stream(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class CompletionRequest(_Request):
    prompt: str | list[int] | list[str] | list[list[int]]
    echo: bool = False
    # OpenAI's legacy default for completions is 16 tokens.
    max_tokens: int | None = 16


class ContentPart(BaseModel):
    """One part of a message's content; only `text` parts reach the model."""
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(request_id: str, model: str, text: str, finish_reason: str | None,
                    usage_counts: dict[str, int] | None, created: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": request_id, "object": "text_completion", "created": created or int(time.time()), "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage_counts is not None:
        body["usage"] = usage_counts
    return body


def chat_body(request_id: str, model: str, text: str, finish_reason: str | None,
              usage_counts: dict[str, int], created: int | None = None) -> dict[str, Any]:
    return {
        "id": request_id, "object": "chat.completion", "created": created or int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage_counts,
    }


def chat_chunk(request_id: str, model: str, created: int, delta: dict[str, Any],
               finish_reason: str | None) -> dict[str, Any]:
    return {
        "id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def completion_chunk(request_id: str, model: str, created: int, text: str,
                     finish_reason: str | None) -> dict[str, Any]:
    body = completion_body(request_id, model, text, finish_reason, None, created)
    return body


def usage_chunk(request_id: str, model: str, created: int, obj: str, usage_counts: dict[str, int]) -> dict[str, Any]:
    return {"id": request_id, "object": obj, "created": created, "model": model, "choices": [], "usage": usage_counts}
