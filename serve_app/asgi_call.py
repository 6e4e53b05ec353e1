"""One HTTP request through an ASGI app inside this process, with the response handed out in parts.

The LLM replica serves requests through vLLM's own OpenAI FastAPI app (so that every field behaves
exactly as in `vllm serve`) without a socket: the ingress already holds the HTTP connection, and
the response's parts go back to it in batched Ray calls (`serve_app.delivery`).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from serve_app.generation import Headers


@dataclass(frozen=True)
class HttpCall:
    method: str
    path: str
    headers: Headers
    body: bytes = b""
    query_string: str = ""


class ClientGone(OSError):
    """Raised into the app's `send` once nobody reads the response: Starlette ends the response then."""


# The response's status and headers (once), then body parts; `more` is False on the last part.
OnStart = Callable[[int, Headers], None]
OnBody = Callable[[bytes, bool], None]


def _scope(call: HttpCall) -> dict[str, Any]:
    return {
        "type": "http",
        # Before 2.4, Starlette's StreamingResponse listens for `http.disconnect` while it streams:
        # that is how a caller that left stops the generation (and frees its KV cache).
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": call.method,
        "scheme": "http",
        "path": call.path,
        "raw_path": call.path.encode(),
        "query_string": call.query_string.encode(),
        "root_path": "",
        "headers": [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in call.headers],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


async def call_app(app: Callable[..., Awaitable[None]], call: HttpCall, on_start: OnStart, on_body: OnBody,
                   disconnected: asyncio.Event) -> bool:
    """Run `call` through `app`; returns whether the response was complete (its last part sent).

    Setting `disconnected` tells the app its client left, as a closed connection would.
    """
    body_sent = False
    completed = False

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": call.body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal completed
        if disconnected.is_set():
            raise ClientGone("the client is gone")
        if message["type"] == "http.response.start":
            headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in message.get("headers", [])]
            on_start(message["status"], headers)
        elif message["type"] == "http.response.body":
            more = bool(message.get("more_body", False))
            on_body(bytes(message.get("body", b"")), more)
            completed = completed or not more

    try:
        await app(_scope(call), receive, send)
    except ClientGone:
        pass
    return completed
