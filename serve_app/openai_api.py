"""OpenAI error bodies, the request models published in /openapi.json, and what the ingress reads
from a request body before handing it on unchanged (no Ray, no vLLM).

Requests are validated and served by vLLM's own OpenAI app on the replica; the models here document
the common fields and are not used to parse.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

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
        return error_body(self.message, self.error_type, self.code, self.param)


# vLLM seeds a torch generator per request: a seed outside int64 fails inside the engine.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


# What vLLM refuses, so that the published schema does not invite it: empty strings and lists,
# negative token ids, more than 4 stop strings or 20 logprobs (vLLM's limits).
Text = Annotated[str, Field(min_length=1)]
TokenId = Annotated[int, Field(ge=0)]
MAX_LOGPROBS = 20


class _Request(BaseModel):
    # Every other field `vllm serve` accepts is accepted (response_format, tools, penalties, ...).
    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(None, ge=1, description="Tokens to generate; default: the rest of the context.")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, description="Choices to generate (more than one needs sampling, temperature > 0).")
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: Text | Annotated[list[Text], Field(max_length=4)] | None = None
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX)
    priority: str | Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)] | None = Field(
        None, description="Priority class by name, or vLLM's integer priority (lower is served first: the class "
        "at that level, 0 the highest); overrides the x-priority header.")


class CompletionRequest(_Request):
    prompt: (Text | Annotated[list[TokenId], Field(min_length=1)] | Annotated[list[Text], Field(min_length=1)]
             | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1)])
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    # OpenAI's legacy default for completions is 16 tokens.
    max_tokens: int | None = Field(16, ge=1)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)


# Characters per token for the router's cost estimate before the replica tokenizes (English text and
# code average 3.5-4.5 with BPE tokenizers); a wrong guess moves load balance a little, never correctness.
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4  # role and template tokens around each chat message


@dataclass(frozen=True)
class RequestPeek:
    """What the ingress needs from a body it forwards unchanged (but for our `priority`)."""

    body: bytes
    priority: str | int | None = None  # a class name, or vLLM's integer (its level)
    stream: bool = False
    estimated_prompt_tokens: int = 0
    # The field that names the output budget and its value, as sent; choices per request (n, best_of).
    budget_field: str | None = None
    budget: int | None = None
    choices: int = 1
    prompt_head: str = ""
    num_messages: int | None = None
    num_stop: int = 0
    # A Responses API request's `previous_response_id`: the stored response it continues.
    previous_response_id: str | None = None

    @property
    def max_new_tokens(self) -> int | None:
        """Tokens the request may generate, all choices together (None: no budget named)."""
        return None if self.budget is None else self.budget * self.choices


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_text_of(item) for item in value if not isinstance(item, int))
    if isinstance(value, dict):
        return _text_of(value.get("text") or value.get("content") or "")
    return ""


def _prompt_tokens(body: dict[str, Any]) -> tuple[int, str]:
    messages = body.get("messages")
    if isinstance(messages, list):
        texts = [_text_of(m.get("content")) if isinstance(m, dict) else "" for m in messages]
        return sum(len(t) for t in texts) // CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS * len(texts), "".join(texts)
    prompt = body.get("prompt", body.get("input"))
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt), ""
    if isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
        return sum(len(p) for p in prompt), ""
    text = _text_of(prompt)
    return len(text) // CHARS_PER_TOKEN, text


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def peek_request(raw: bytes) -> RequestPeek:
    """Read a request body's class, size and output budget; a body that is not a JSON object passes as
    is (vLLM's app answers it, exactly as `vllm serve` would). `priority` is taken out: a class name, or
    vLLM's scheduling integer (the class at that level); the replica sets vLLM's from the class."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return RequestPeek(raw, estimated_prompt_tokens=len(raw) // CHARS_PER_TOKEN)
    if not isinstance(body, dict):
        return RequestPeek(raw, estimated_prompt_tokens=len(raw) // CHARS_PER_TOKEN)
    priority = body.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, (str, int))):
        raise ApiError(400, "priority is the name of a priority class, or vLLM's integer priority (lower is "
                       "served first)", param="priority", code="unknown_priority_class")
    if "priority" in body:
        del body["priority"]
        raw = json.dumps(body).encode()
    prompt_tokens, text = _prompt_tokens(body)
    budget_field = next((f for f in ("max_completion_tokens", "max_tokens", "max_output_tokens")
                         if body.get(f) is not None), None)
    max_new = _positive_int(body.get(budget_field)) if budget_field else None
    choices = max(_positive_int(body.get("n")) or 1, _positive_int(body.get("best_of")) or 1)
    stop = body.get("stop")
    messages = body.get("messages")
    return RequestPeek(
        body=raw, priority=priority, stream=body.get("stream") is True, estimated_prompt_tokens=prompt_tokens,
        budget_field=budget_field, budget=max_new, choices=choices, prompt_head=text[:256],
        num_messages=len(messages) if isinstance(messages, list) else None,
        num_stop=len(stop) if isinstance(stop, list) else int(bool(stop)),
        previous_response_id=previous if isinstance(previous := body.get("previous_response_id"), str) else None,
    )


RESPONSES_PATH = "/v1/responses"  # OpenAI's Responses API: its answers are stored in the replica that made them


# The first `"id"` of a Responses API answer is the response's own: the whole response's first field, and in a
# stream the first event's (`response.created`, whose `response` comes first).
_FIRST_ID = re.compile(rb'"id"\s*:\s*"((?:[^"\\]|\\.)*)"')


def stored_response_id(first_bytes: bytes) -> str | None:
    """The id of the response whose answer begins with `first_bytes` (vLLM's `/v1/responses`, streamed or
    not), or None where they name none."""
    found = _FIRST_ID.search(first_bytes)
    if found is None:
        return None
    try:
        return json.loads(b'"' + found.group(1) + b'"')
    except ValueError:
        return None


def error_body(message: str, error_type: str, code: str | int | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}
