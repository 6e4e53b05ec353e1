"""Differential test of an OpenAI-compatible server against `vllm serve`, request by request.

Each case of `REQUEST_MATRIX` goes to both servers, one request at a time; the answers are
normalized (`normalized_reply`) and compared field by field (`differences`). What may differ:
ids and timestamps, error message text, and a stream's chunk boundaries. Pure: httpx only, no
Ray, no vLLM, so the CPU integration test and the GPU benchmark share it.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from serve_app.fidelity_matrix import REQUEST_MATRIX, Case, request_matrix

__all__ = ["REQUEST_MATRIX", "Case", "request_matrix", "CaseResult", "FidelityReport", "Reply",
           "differences", "fold_stream", "normalized_reply", "parse_sse", "run_matrix"]

# Logprobs are float32 and equal to the bit between two engines that run the same batches; 1e-3
# absorbs last-bit kernel differences (another attention path, a prefix-cache hit) and still
# catches a wrong temperature, penalty or token, which move a logprob by far more. (A random-weight
# model's top tokens can lie within 1e-3 of each other, so such noise could also flip a greedy
# token: the test relies on both servers computing the same thing, hence one request at a time.)
FLOAT_ABS_TOLERANCE = 1e-3
VOLATILE_KEYS = frozenset({"id", "created", "system_fingerprint"})
# Streamed string fragments that the client concatenates; any other streamed scalar is a value
# repeated or set once (role, finish_reason, name), of which the last non-null one counts.
CONCATENATED_KEYS = frozenset({"content", "text", "arguments", "reasoning", "reasoning_content", "refusal"})
# /v1/models: what a client reads. `created` is a timestamp; `permission` is a block of constants
# with its own random id and timestamp that OpenAI no longer sends.
MODEL_FIELDS = ("id", "object", "owned_by", "root", "parent", "max_model_len")
REPR_LIMIT = 160


@dataclass(frozen=True)
class Reply:
    """One server's answer, normalized for `reply_differences`; status 0: no answer (transport error)."""

    status: int
    content_type: str
    body: Any


def _is_volatile(key: str) -> bool:
    return key in VOLATILE_KEYS or "request_id" in key


def _without_volatile(value: Any) -> Any:
    """Drops ids (response, tool call, request) and timestamps at any depth."""
    if isinstance(value, dict):
        return {k: _without_volatile(v) for k, v in value.items() if not _is_volatile(k)}
    if isinstance(value, list):
        return [_without_volatile(item) for item in value]
    return value


def _without_error_text(payload: Any) -> Any:
    """An error's type, param and code count; its message wording does not."""
    if not isinstance(payload, dict):
        return payload
    if isinstance(payload.get("error"), dict):
        return {**payload, "error": {k: v for k, v in payload["error"].items() if k != "message"}}
    if payload.get("object") == "error":  # the flat error shape of older vLLM servers
        return {k: v for k, v in payload.items() if k != "message"}
    return payload


def parse_sse(text: str) -> list[str]:
    """The `data:` payloads of an event stream, in order (multi-line data joined by newlines)."""
    events, lines = [], []
    for line in text.splitlines():
        if line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
        elif not line.strip() and lines:
            events.append("\n".join(lines))
            lines = []
    if lines:
        events.append("\n".join(lines))
    return events


def _accumulate(total: dict, part: dict) -> dict:
    """A streamed fragment added to what came before it, as a client assembles a stream."""
    for key, value in part.items():
        if value is None:
            total.setdefault(key, None)
        elif isinstance(value, str) and key in CONCATENATED_KEYS:
            total[key] = (total.get(key) or "") + value
        elif key == "tool_calls" and isinstance(value, list):
            calls = {call.get("index", 0): call for call in total.get(key) or []}
            for fragment in value:
                index = fragment.get("index", 0)
                calls[index] = _accumulate(dict(calls.get(index, {})), fragment)
            total[key] = [calls[index] for index in sorted(calls)]
        elif isinstance(value, list):
            total[key] = (total.get(key) or []) + value
        elif isinstance(value, dict):
            total[key] = _accumulate(dict(total.get(key) or {}), value)
        else:
            total[key] = value
    return total


def fold_stream(payloads: list[str]) -> dict:
    """A stream assembled as a client would, so that two streams of the same tokens compare equal
    however their events were cut (a server may coalesce several engine steps into one event):
    the events' other fields, `choices` folded per index (text, content, tool-call arguments
    concatenated; logprob lists joined; last finish_reason), the last `usage`, whether `[DONE]`
    came last, and any error events."""
    top: dict = {}
    choices: dict[int, dict] = {}
    usage = None
    errors, undecodable = [], []
    for position, payload in enumerate(payloads):
        if payload == "[DONE]":
            top["[DONE]"] = "last" if position == len(payloads) - 1 else f"at {position} of {len(payloads)}"
            continue
        try:
            event = json.loads(payload)
        except json.JSONDecodeError:
            undecodable.append(payload)
            continue
        if not isinstance(event, dict) or "error" in event or event.get("object") == "error":
            errors.append(_without_error_text(_without_volatile(event)))
            continue
        event = _without_volatile(event)
        for choice in event.pop("choices", None) or []:
            index = choice.get("index", 0)
            choices[index] = _accumulate(choices.get(index, {}), choice)
        usage = event.pop("usage", None) or usage
        _accumulate(top, event)
    folded = {**top, "choices": [choices[index] for index in sorted(choices)], "usage": usage}
    if errors:
        folded["errors"] = errors
    if undecodable:
        folded["undecodable_events"] = undecodable
    return folded


def _models_body(body: Any) -> Any:
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return body
    models = [{k: model.get(k) for k in MODEL_FIELDS if k in model} for model in body["data"]]
    return {"object": body.get("object"), "data": models}


def normalized_reply(path: str, status: int, content_type: str, text: str) -> Reply:
    """Status, media type and the body with volatile fields dropped (see the module docstring)."""
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "text/event-stream":
        return Reply(status, media_type, fold_stream(parse_sse(text)))
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        return Reply(status, media_type, text)
    if path.rstrip("/").endswith("/models") and status == 200:
        return Reply(status, media_type, _models_body(body))
    body = _without_volatile(body)
    return Reply(status, media_type, _without_error_text(body) if status >= 400 else body)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= REPR_LIMIT else text[:REPR_LIMIT] + "..."


def differences(ours: Any, reference: Any, path: str = "") -> list[str]:
    """Where `ours` departs from `reference`, as `path: ours != reference` lines."""
    where = path or "<root>"
    if isinstance(ours, dict) and isinstance(reference, dict):
        found = []
        for key in [*reference, *(k for k in ours if k not in reference)]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in ours:
                found.append(f"{sub}: missing in ours (reference: {_short(reference[key])})")
            elif key not in reference:
                found.append(f"{sub}: not in reference (ours: {_short(ours[key])})")
            else:
                found += differences(ours[key], reference[key], sub)
        return found
    if isinstance(ours, list) and isinstance(reference, list):
        found = [] if len(ours) == len(reference) else [f"{where}: {len(ours)} items != {len(reference)}"]
        for index, (mine, theirs) in enumerate(zip(ours, reference)):
            found += differences(mine, theirs, f"{path}.{index}" if path else str(index))
        return found
    if _is_float_pair(ours, reference):
        if math.isclose(ours, reference, rel_tol=0, abs_tol=FLOAT_ABS_TOLERANCE):
            return []
    elif type(ours) is type(reference) and ours == reference:
        return []
    return [f"{where}: {_short(ours)} != {_short(reference)}"]


def _is_float_pair(a: Any, b: Any) -> bool:
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    return numbers and (isinstance(a, float) or isinstance(b, float))


def reply_differences(ours: Reply, reference: Reply) -> list[str]:
    found = [] if ours.status == reference.status else [f"status: {ours.status} != {reference.status}"]
    if ours.content_type != reference.content_type:
        found.append(f"content_type: {ours.content_type!r} != {reference.content_type!r}")
    return found + differences(ours.body, reference.body, "body")


@dataclass(frozen=True)
class CaseResult:
    name: str
    our_status: int
    reference_status: int
    differences: list[str]

    @property
    def match(self) -> bool:
        return not self.differences


@dataclass(frozen=True)
class FidelityReport:
    results: list[CaseResult]

    @property
    def matched(self) -> int:
        return sum(result.match for result in self.results)

    @property
    def mismatched(self) -> list[CaseResult]:
        return [result for result in self.results if not result.match]

    def to_json(self) -> str:
        cases = [{**asdict(result), "match": result.match} for result in self.results]
        return json.dumps({"matched": self.matched, "total": len(self.results), "cases": cases}, indent=2)

    def format_table(self) -> str:
        lines = [f"{self.matched} of {len(self.results)} cases match"]
        for result in self.results:
            verdict = "ok" if result.match else "DIFFERS"
            lines.append(f"  {result.name:<44} {result.our_status:>3} {result.reference_status:>3}  {verdict}")
            lines += [f"      {line}" for line in result.differences]
        return "\n".join(lines)


def fetch_reply(client: httpx.Client, base_url: str, case: Case, headers: dict[str, str] | None = None) -> Reply:
    """One case sent to one server; a transport failure (refused, timed out) is a reply with status 0."""
    content = case.raw_body if case.raw_body is not None else (
        json.dumps(case.body).encode() if case.body is not None else None)
    request_headers = {"content-type": "application/json", **(headers or {})} if content is not None else headers
    try:
        response = client.request(case.method, base_url.rstrip("/") + case.path, content=content,
                                  headers=request_headers)
    except httpx.HTTPError as error:
        return Reply(0, "", {"transport_error": type(error).__name__})
    return normalized_reply(case.path, response.status_code, response.headers.get("content-type", ""),
                            response.text)


def run_matrix(our_url: str, reference_url: str, cases: list[Case] | None = None, *,
               our_headers: dict[str, str] | None = None, reference_headers: dict[str, str] | None = None,
               timeout_s: float = 120.0, transport: httpx.BaseTransport | None = None) -> FidelityReport:
    """Every case to both servers in turn, never two requests at once: a greedy output depends on
    the batch it ran in, so each request must run alone on both sides."""
    results = []
    with httpx.Client(timeout=timeout_s, transport=transport) as client:
        for case in REQUEST_MATRIX if cases is None else cases:
            ours = fetch_reply(client, our_url, case, our_headers)
            reference = fetch_reply(client, reference_url, case, reference_headers)
            results.append(CaseResult(case.name, ours.status, reference.status, reply_differences(ours, reference)))
    return FidelityReport(results)
