"""What of a client's request goes on to vLLM's app, and what of vLLM's answer comes back."""
from __future__ import annotations

from typing import Iterable

from fastapi import Request

from serve_app.openai_api import ApiError

# Of the headers vLLM's app answers with, those that describe the body (the length is the framework's).
FORWARDED_RESPONSE_HEADERS = {"content-type"}
# Of the client's headers, those vLLM's app reads (the request id is ours, set by the replica).
FORWARDED_REQUEST_HEADERS = {"content-type", "accept"}


def kept(headers: Iterable[tuple[str, str]] | None, names: set[str]) -> list[tuple[str, str]]:
    """The headers among `names` (case-insensitive), forwarded to or from vLLM's app."""
    return [(name, value) for name, value in headers or () if name.lower() in names]


def route_path(http_request: Request) -> str:
    """The path as vLLM's app knows it: the matched route's, without the application's route prefix."""
    return http_request.scope["route"].path


async def raw_body(request: Request, max_bytes: int) -> bytes:
    raw = await request.body()
    if len(raw) > max_bytes:
        raise ApiError(413, f"request body is {len(raw)} bytes; the limit is {max_bytes}", code="body_too_large")
    return raw
