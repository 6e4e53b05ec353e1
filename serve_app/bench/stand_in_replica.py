"""A stand-in for `LLMReplica` that answers at once, for measuring the request path without an engine.

It speaks the replica's protocol (registers with the controller, reports load, takes `run` calls and
sends response parts to the ingress replica that holds the request), so ingress, routing, controller,
Ray hops and the HTTP proxy run as in production while generation costs nothing. A streamed request
gets one event per requested token (`max_tokens`, default `STREAM_EVENTS`), the first at once and the next
every `token_interval_s`, so that background streams put a token load of their own on the path.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from collections.abc import AsyncIterator

from serve_app.delivery import Batch
from serve_app.deployments.ingress_link import ReplicaDelivery
from serve_app.generation import FirstPartStamps, GenerationRequest, ResponsePart, RunSummary
from serve_app.telemetry import tracing
from serve_app.telemetry.tracing import RequestSpan

STREAM_EVENTS = 4
KV_BLOCKS, BLOCK_SIZE, MAX_NUM_SEQS = 100_000, 16, 1024
JSON_HEADERS = [("content-type", "application/json")]
SSE_HEADERS = [("content-type", "text/event-stream; charset=utf-8")]


def _completion(request_id: str, text: str, tokens: int) -> dict[str, Any]:
    return {"id": f"cmpl-{request_id}", "object": "text_completion", "created": int(time.time()), "model": "stand-in",
            "choices": [{"index": 0, "text": text, "finish_reason": "length", "logprobs": None}],
            "usage": {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1}}


class StandInReplica:
    async def __init__(self, config: dict, engine_overrides: dict[str, Any] | None = None,
                       ingress_name: str = "Ingress", controller: Any = None):
        from ray import serve

        from serve_app.config import parse_config

        settings = parse_config(config)
        tracing.configure_from_settings(settings.telemetry)
        context = serve.get_replica_context()
        self._replica_id = context.replica_id.unique_id
        self._controller = controller
        # Time between a streamed response's events, as the engine's would be (the engine overrides carry it).
        self._token_interval_s = float((engine_overrides or {}).get("stand_in_token_interval_s", 0.0))
        self._delivery = ReplicaDelivery(settings.http, ingress_name, self._replica_id)
        self._outbox = self._delivery.outbox
        await self._delivery.start(self.run)  # direct delivery's connections (`http.delivery: direct`)
        self._in_flight = 0
        self._completed = 0
        await controller.report_allocation.remote(self._replica_id, KV_BLOCKS, BLOCK_SIZE, MAX_NUM_SEQS)
        self._report_task = asyncio.create_task(self._report_forever())

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            if await self._controller.report_load.remote(self._replica_id, [], 0) is None:
                await self._controller.report_allocation.remote(self._replica_id, KV_BLOCKS, BLOCK_SIZE, MAX_NUM_SEQS)

    async def run(self, request: GenerationRequest, reply_to: str, target_replica: str | None = None) -> RunSummary:
        with self._delivery.running_for(reply_to):
            return await self._run(request, reply_to)

    async def _run(self, request: GenerationRequest, reply_to: str) -> RunSummary:
        self._in_flight += 1
        started, started_wall = time.monotonic(), time.time()
        span = RequestSpan("engine.generate", parent=request.trace_context,
                           attributes={"llm.replica": self._replica_id, "llm.request_id": request.request_id})
        try:
            asked = json.loads(request.body)
            streamed, events = asked.get("stream", False), max(1, int(asked.get("max_tokens") or STREAM_EVENTS))
            span.first_token()
            # Its first token comes at once; the stamps say how the path around it went (`first_part_path`).
            stamps = FirstPartStamps(request.arrival_time, request.dispatched_at, started_wall, started_wall,
                                     time.time())
            if not streamed:
                body = json.dumps(_completion(request.request_id, "x", 1)).encode()
                seq = self._outbox.put(reply_to, request.request_id, ResponsePart(
                    body, status=200, headers=JSON_HEADERS, done=True, generated_tokens=1, since_first_token_s=0.0,
                    stamps=stamps))
                generated = 1
            else:
                for index in range(events):
                    if index:
                        await asyncio.sleep(self._token_interval_s)
                    event = f"data: {json.dumps(_completion(request.request_id, 'x', index + 1))}\n\n"
                    last = index == events - 1
                    seq = self._outbox.put(reply_to, request.request_id, ResponsePart(
                        (event + ("data: [DONE]\n\n" if last else "")).encode(), status=200 if index == 0 else None,
                        headers=SSE_HEADERS if index == 0 else None, done=last, generated_tokens=index + 1,
                        stamps=stamps if index == 0 else None))
                generated = events
            await self._outbox.wait_sent(reply_to, seq)
            self._completed += 1
            return RunSummary(self._replica_id, num_prompt_tokens=1, num_generated=generated, finish_reason="length",
                              ttft_s=0.0, duration_s=time.monotonic() - started, status=200)
        finally:
            span.end()
            self._in_flight -= 1

    async def collect(self, ingress_id: str, target_replica: str | None = None) -> AsyncIterator[Batch]:
        async for batch in self._delivery.stream(ingress_id, target_replica):
            yield batch

    async def direct_address(self, target_replica: str | None = None) -> Any:
        return self._delivery.direct_address()

    async def forget(self, ingress_id: str, request_ids: list[str], target_replica: str | None = None) -> None:
        self._delivery.forget(ingress_id, request_ids)  # nothing to abort: answered at once

    async def ping(self) -> dict[str, Any]:
        return {"replica_id": self._replica_id, **self.record_routing_stats()}

    async def check_health(self) -> None:
        return None

    def record_routing_stats(self) -> dict[str, Any]:
        return {"engine_unfinished_requests": self._in_flight, "outstanding_tokens": self._in_flight,
                "in_flight": self._in_flight, "window_cap": MAX_NUM_SEQS}

    async def engine_stats(self, target_replica: str | None = None) -> dict[str, Any]:
        return {"replica_id": self._replica_id, "completed": self._completed, **self._delivery.stats(),
                **self.record_routing_stats()}

    async def collected_spans(self) -> list[dict[str, Any]]:
        return tracing.finished_spans()
