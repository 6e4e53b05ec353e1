"""Streaming OpenAI completions client for the load driver (aiohttp, asyncio).

One POST /v1/completions per planned request with `stream: true` and usage in the stream; records
when each token event arrived. 429/503 are refusals (with Retry-After), any other non-2xx, an error
event inside the stream, a stream without tokens or a transport error is a failure. A per-request
timeout bounds every request, so a run never hangs.

aiohttp, as `vllm bench serve` uses: httpx's connection pool walks every open connection (a socket
poll each) whenever a request starts or ends, so an open-loop run with hundreds of streams in flight
spent its time there, its clock stamps late and its sampler starved.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from autoscaling.loadtest.metrics import RequestRecord
from autoscaling.loadtest.workload import PlannedRequest

REFUSAL_STATUSES = (429, 503)


@dataclass(frozen=True)
class ClientOptions:
    base_url: str                               # server root, without /v1
    model: str
    api_keys: dict[str, str] | None = None      # per class; "*" is the key for all other classes
    priority_header: bool = False               # send the class as `x-priority` instead of the body's `priority`
    send_priority: bool = True                  # False for servers that know no priority classes
    timeout_s: float = 600.0

    def headers(self, class_name: str, api_key: str | None = None) -> dict[str, str]:
        """`api_key` (a tenant's own) wins over the per-class keys."""
        headers = {"content-type": "application/json"}
        keys = self.api_keys or {}
        key = api_key or keys.get(class_name, keys.get("*"))
        if key:
            headers["authorization"] = f"Bearer {key}"
        if self.send_priority and self.priority_header:
            headers["x-priority"] = class_name
        return headers

    def body(self, planned: PlannedRequest) -> dict[str, Any]:
        prompt = planned.prompt if isinstance(planned.prompt, str) else list(planned.prompt)
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "max_tokens": planned.max_tokens,
                                "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}
        if self.send_priority and not self.priority_header:
            body["priority"] = planned.class_name
        return body


def new_http_client(timeout_s: float) -> aiohttp.ClientSession:
    """No connection cap: an open-loop run must never queue requests inside the client. The whole
    request's deadline is `send`'s own (`asyncio.timeout`); here only the connect has one."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
                                 timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(30.0, timeout_s)))


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error_fields(payload: Any) -> tuple[str | None, str | None]:
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return str(error.get("message")), error.get("code")
    return (str(error) if error is not None else None), None


async def send(http: aiohttp.ClientSession, options: ClientOptions, planned: PlannedRequest,
               clock_zero: float, arrival_s: float | None = None) -> RequestRecord:
    """Send one request now and follow its stream to the end; never raises for server or network trouble.
    `arrival_s`: when it arrived (seconds from `clock_zero`), if it waited before being sent; its
    latencies count from then."""
    now = lambda: time.perf_counter() - clock_zero  # noqa: E731
    send_s = now() if arrival_s is None else arrival_s
    record = RequestRecord(planned.index, planned.class_name, send_s=send_s, end_s=0.0, outcome="failed",
                           prompt_tokens=planned.prompt_len, tenant=planned.tenant)
    try:
        async with asyncio.timeout(options.timeout_s):
            await _exchange(http, options, planned, record, now)
    except aiohttp.ClientError as error:  # first: aiohttp's connect timeouts are TimeoutErrors too
        record.outcome, record.error, record.error_code = "failed", f"{type(error).__name__}: {error}", "transport"
    except TimeoutError:
        record.outcome, record.error, record.error_code = "failed", f"no answer within {options.timeout_s}s", "timeout"
    except ValueError as error:  # an event that is not JSON
        record.outcome, record.error, record.error_code = "failed", f"malformed stream: {error}", "bad_stream"
    record.end_s = now()
    return record


async def _exchange(http: aiohttp.ClientSession, options: ClientOptions, planned: PlannedRequest,
                    record: RequestRecord, now) -> None:
    url = f"{options.base_url.rstrip('/')}/v1/completions"
    headers = options.headers(planned.class_name, planned.api_key)
    async with http.post(url, json=options.body(planned), headers=headers) as response:
        record.status = response.status
        if response.status != 200:
            content = await response.read()
            try:
                record.error, record.error_code = _error_fields(json.loads(content))
            except (json.JSONDecodeError, UnicodeDecodeError):
                record.error = content[:500].decode(errors="replace")
            if response.status in REFUSAL_STATUSES:
                record.outcome = "refused"
                record.retry_after_s = _retry_after(response.headers.get("retry-after"))
            return
        done = False
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue  # blank separators and SSE comments (pings)
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            event = json.loads(data)
            if "error" in event:
                record.error, record.error_code = _error_fields(event)
                return
            if event.get("choices"):
                at = now()
                if record.first_token_s is None:
                    record.first_token_s = at
                record.token_times_s.append(at)
            usage = event.get("usage")
            if usage:
                record.output_tokens = usage.get("completion_tokens")
                record.prompt_tokens = usage.get("prompt_tokens", record.prompt_tokens)
        if not done or record.first_token_s is None:
            record.error = "stream ended without [DONE]" if not done else "stream carried no tokens"
            record.error_code = "incomplete_stream"
            return
        if record.output_tokens is None:  # a server without usage in streams: count events
            record.output_tokens = len(record.token_times_s)
        record.outcome = "completed"
