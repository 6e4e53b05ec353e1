"""The LLM replica: one vLLM `AsyncLLM` engine (one GPU, or the CPU build) behind a Ray Serve replica.

Requests are served by vLLM's own OpenAI app on that engine (`serve_app.vllm_frontend`), in-process; the
response goes back to the ingress replica holding the connection in batches (`serve_app.delivery`).
"""
from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from typing import Any

from serve_app import engine_forkserver

engine_forkserver.prestart_if_requested()  # first: the fork server imports vLLM while the lines below do

from vllm import envs as vllm_envs  # noqa: E402
from vllm.usage.usage_lib import UsageContext  # noqa: E402
from vllm.v1.engine.async_llm import AsyncLLM  # noqa: E402

from serve_app.asgi_call import HttpCall, call_app
from serve_app.config import parse_config
from serve_app.engine_args import engine_args_from_config
from serve_app.engine_stats import EngineSnapshot, engine_stat_loggers
from serve_app.deployments.controller_link import ControllerLink
from serve_app.deployments.engine_watchdog import EngineWatchdog
from serve_app.deployments.errors import EngineDied, MisroutedCall
from serve_app.delivery import Batch
from serve_app.direct_link import DirectAddress
from serve_app.deployments.ingress_link import ReplicaDelivery
from serve_app.deployments.replica_reports import ReplicaReports
from serve_app.deployments.serve_states import own_replica_id
from serve_app.deployments.supervision import start_supervised
from serve_app.generation import GenerationRequest, Headers, RunSummary
from serve_app.kv_event_log import KvEventPage
from serve_app.kv_events import EngineKvEvents
from serve_app.openai_api import RESPONSES_PATH, stored_response_id
from serve_app.replica_ledger import ReplicaLedger, RequestOutcome
from serve_app.response_relay import ResponseRelay
from serve_app.shared_memory import remove_orphaned_segments, vllm_segments
from serve_app.telemetry import tracing
from serve_app.telemetry.gc_pauses import prepare_process_for_serving
from serve_app.telemetry.log_filters import install_prompt_flush, quiet_routine_calls
from serve_app.telemetry.log_names import service_logger
from serve_app.telemetry.tracing import RequestSpan
from serve_app.vllm_frontend import CURRENT_TALLY, RequestTally, build_server_app, server_namespace, tap_engine

logger = service_logger("replica")


class LLMReplica:
    """Streams tokens for `GenerationRequest`s; reports engine stats to routers and health to Serve."""

    async def __init__(self, config: dict, engine_overrides: dict[str, Any] | None = None,
                       ingress_name: str = "Ingress", controller: Any = None):
        quiet_routine_calls()  # no access-log line per internal call (ping, run, deliver)
        install_prompt_flush()  # warnings and our lines reach the replica's log file at once
        self._config = parse_config(config)
        self._replica_id = own_replica_id()
        self._snapshot = EngineSnapshot()
        self._controller_handle = controller
        self._controller = None if controller is None else ControllerLink(controller, self._replica_id, self._config)
        self._ledger = ReplicaLedger({c.name: (c.ttft_slo_s, c.tpot_slo_s) for c in self._config.priority_classes},
                                     self._config.autoscaling.llm.slo_window_s)
        tracing.configure_from_settings(self._config.telemetry)
        started = time.monotonic()
        self._shm_before = vllm_segments()  # the engine's own, removed at stop (`__del__`) once unused
        planned = await self._controller.planned_engine_args() if self._controller else {}
        overrides = {**planned, **(engine_overrides or {})}
        # Routing by what each engine caches needs the engine's KV events (`serve_app.kv_events`).
        self._kv_events = EngineKvEvents() if self._config.router.routing == "precise_prefix" else None
        if self._kv_events is not None:
            self._kv_events.start()
            overrides["kv_events_config"] = self._kv_events.engine_config()
        engine_args = engine_args_from_config(self._config, overrides)
        if engine_forkserver.requested():
            engine_forkserver.use_for_engine()
        self._engine = AsyncLLM.from_engine_args(
            engine_args,
            # The API server's usage context gives the same batch defaults as `vllm serve`.
            usage_context=UsageContext.OPENAI_API_SERVER,
            stat_loggers=engine_stat_loggers(
                self._snapshot, self._config.telemetry.metrics and self._config.telemetry.engine_metrics),
        )
        tap_engine(self._engine)
        self._app = await build_server_app(self._engine, server_namespace(engine_args, self._config.engine.frontend))
        # vLLM's engine processes cache their VLLM_* settings once started; its output processing here reads
        # one per request output otherwise (os.environ on every token: ~2% of this process under a flood).
        enable_envs_cache = getattr(vllm_envs, "enable_envs_cache", None)
        if enable_envs_cache is not None:
            enable_envs_cache()
        self._startup_s = time.monotonic() - started
        self._client_gone: dict[str, asyncio.Event] = {}  # request id -> set when nobody reads it (`_abandon`)
        self.aborted_abandoned = 0
        self._delivery = ReplicaDelivery(self._config.http, ingress_name, self._replica_id, self._abandon)
        self._outbox = self._delivery.outbox
        await self._delivery.start(self.run)  # direct delivery's connections (`http.delivery: direct`)
        self._stats_task: asyncio.Task | None = None
        if self._config.replicas.engine_stuck_after_s is not None:
            self._watchdog_task = start_supervised(EngineWatchdog(
                self._engine, self._snapshot, self._config.replicas.engine_stuck_after_s).run_forever)
        cache = self._engine.vllm_config.cache_config
        if self._kv_events is not None:
            self._kv_events.engine_ready(cache.block_size, cache.num_gpu_blocks)
        logger.info("replica %s: engine ready in %.1fs, %s KV blocks of %s", self._replica_id, self._startup_s,
                    cache.num_gpu_blocks, cache.block_size)
        # The engine client's start-up objects are frozen with the rest (before the controller hears of it).
        process = prepare_process_for_serving(self._config.process, lambda: self._ledger.in_flight)
        self._reports = ReplicaReports(self._replica_id, self._engine, self._snapshot, self._ledger, self._delivery,
                                       self._config.http.delivery, process, self._controller, self._controller_handle,
                                       metrics=self._config.telemetry.metrics)
        if self._controller is not None:
            await self._controller.register(self._engine.vllm_config)
            self._report_task = start_supervised(functools.partial(
                self._controller.report_load_forever, self._engine.vllm_config, self._ledger,
                lambda: self._snapshot.num_preemptions_total, lambda: self._snapshot.kv_cache_usage,
                self._reports.observe_engine, engine_load=self._reports.engine_load,
                engine_dead=lambda: self._engine.errored))

    async def run(self, request: GenerationRequest, reply_to: str, target_replica: str | None = None) -> RunSummary:
        """Serve `request` through vLLM's app, sending the response's parts to ingress replica `reply_to`;
        returns once all are sent.

        `target_replica` is the router's choice, read by the request router that sent the call here; by pull,
        a call meant for another replica is refused (`MisroutedCall`).
        """
        received_at = time.time()  # the hop's end: before this call's own set-up, which is the replica's time
        if target_replica not in (None, self._replica_id) and self._config.http.delivery == "pull":
            raise MisroutedCall(f"a call for LLM replica {target_replica} reached {self._replica_id}: its target "
                                "has left the LLM replicas' router (died or draining)")
        tally = RequestTally.for_request(request.path, request.priority_rank, self._config.http, request.body,
                                         engine_errored=lambda: self._engine.errored)
        CURRENT_TALLY.set(tally)  # this call's task only; vLLM's handler tasks inherit it
        client_gone = self._client_gone[request.request_id] = asyncio.Event()
        self._ledger.start(request.request_id, request.cost_tokens)
        summary = RunSummary(replica_id=self._replica_id)
        span = RequestSpan("engine.generate", parent=request.trace_context,
                           attributes={"llm.replica": self._replica_id, "llm.request_id": request.request_id,
                                       "llm.priority_class": request.priority_class})
        relay = ResponseRelay(lambda part: self._outbox.put(reply_to, request.request_id, part), tally,
                              on_first_token=span.first_token,  # the span keeps only the first
                              arrived_at=request.arrival_time, dispatched_at=request.dispatched_at,
                              received_at=received_at)
        started = time.monotonic()
        call = HttpCall("POST", request.path, [*request.headers, ("x-request-id", request.request_id)], request.body)
        completed = False
        try:
            with self._delivery.running_for(reply_to):
                try:
                    completed = await call_app(self._app, call, relay.on_start, relay.on_body, client_gone)
                except Exception as error:  # after the response began: nothing left but an error part
                    logger.exception("request %s failed in vLLM's app", request.request_id)
                    relay.fail(f"the engine failed: {type(error).__name__}", status=500)
                if not completed and not client_gone.is_set() and not relay.done and relay.status != 500:
                    relay.fail("the response ended before it was complete")
                await self._outbox.wait_sent(reply_to, relay.last_seq)
                if tally.engine_dead:  # the router stops routing here at once; an unbegun request is re-routed
                    raise EngineDied(f"LLM replica {self._replica_id}'s engine died")
        finally:
            summary.status = relay.status
            summary.num_prompt_tokens, summary.num_generated = tally.prompt_tokens, tally.generated_tokens
            summary.num_cached_prompt_tokens = tally.cached_prompt_tokens
            summary.finish_reason, summary.ttft_s = tally.finish_reason, tally.first_token_s
            summary.duration_s = time.monotonic() - started
            summary.engine_inter_token_s = self._snapshot.recent_inter_token.mean_s()
            if request.path == RESPONSES_PATH and relay.status == 200:
                summary.response_id = stored_response_id(relay.first_bytes)
            span.set(llm__prompt_tokens=tally.prompt_tokens, llm__completion_tokens=tally.generated_tokens,
                     llm__finish_reason=summary.finish_reason, http__response__status_code=summary.status)
            if summary.finish_reason is None and (summary.status or 500) < 400:
                span.fail("not finished (cancelled or engine failure)")
            span.end()
            self._client_gone.pop(request.request_id, None)
            self._ledger.finish(request.request_id, RequestOutcome(
                request.priority_class, summary.finish_reason, tally.prompt_tokens, tally.generated_tokens,
                summary.ttft_s, summary.duration_s, delivered_whole=completed and not client_gone.is_set(),
                cached_prompt_tokens=tally.cached_prompt_tokens), time.monotonic())
        return summary

    def _abandon(self, request_ids: list[str]) -> None:
        """Nobody reads these responses any more (the client, the router that dispatched them or their
        ingress replica is gone): vLLM's app sees its client disconnect, which aborts the engine
        requests and frees their KV cache."""
        gone = [self._client_gone[rid] for rid in request_ids if rid in self._client_gone]
        if gone:
            self.aborted_abandoned += len(gone)
            logger.info("replica %s: aborting %d abandoned requests", self._replica_id, len(gone))
            for event in gone:
                event.set()

    async def collect(self, ingress_id: str, target_replica: str | None = None) -> AsyncIterator[Batch]:
        """Delivery by pull (`http.delivery: pull`): the stream of response parts for ingress replica
        `ingress_id`, open while it has requests here (`serve_app.delivery_pull`)."""
        async for batch in self._delivery.stream(ingress_id, target_replica):
            yield batch

    async def direct_address(self, target_replica: str | None = None) -> DirectAddress | None:
        return self._delivery.direct_address()  # direct delivery: where this replica takes runs

    async def forget(self, ingress_id: str, request_ids: list[str], target_replica: str | None = None) -> None:
        """Delivery by pull: ingress replica `ingress_id` no longer reads these requests (their clients left);
        with none, its heartbeat."""
        self._delivery.forget(ingress_id, request_ids)

    async def serve_http(self, method: str, path: str, headers: Headers, body: bytes = b"", query_string: str = "",
                         target_replica: str | None = None) -> tuple[int, Headers, bytes]:
        """A call to vLLM's app that generates nothing (models, tokenize, version, a stored response): answered
        whole (`target_replica`: read by the request router, as in `run`)."""
        start: dict[str, Any] = {}
        parts: list[bytes] = []
        await call_app(self._app, HttpCall(method, path, headers, body, query_string),
                       lambda status, sent: start.update(status=status, headers=sent),
                       lambda chunk, more: parts.append(chunk), asyncio.Event())
        return start.get("status", 500), start.get("headers", []), b"".join(parts)

    async def collected_spans(self) -> list[dict[str, Any]]:
        """Spans this replica finished (only with `telemetry.tracing_exporter: memory`, for tests)."""
        return tracing.finished_spans()

    async def check_health(self) -> None:
        """Ray Serve calls this periodically; an engine that died makes the replica restart."""
        await self._engine.check_health()

    async def ping(self) -> dict[str, Any]:
        """The health route's probe: asks the engine itself, then reports its load."""
        await self._engine.check_health()
        if self._stats_task is None:
            self._stats_task = start_supervised(self._reports.log_engine_stats_forever)
        return {"replica_id": self._replica_id, **self.record_routing_stats()}

    def record_routing_stats(self) -> dict[str, Any]:
        """Polled by routers (Ray Serve's request-router stats) every `router.stats_period_s`."""
        return self._reports.routing_stats()

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Ray Serve's custom autoscaling metrics (read by autoscaling.ray_policy)."""
        return await self._reports.autoscaling_stats()

    async def kv_cache_events(self, since_seq: int, target_replica: str | None = None) -> KvEventPage | None:
        """This engine's KV cache events after an ingress's cursor (None: published only when routing by them)."""
        return self._kv_events.page(since_seq) if self._kv_events is not None else None

    async def engine_stats(self, target_replica: str | None = None) -> dict[str, Any]:
        """Engine and delivery counters (`target_replica` picks the replica, as in `run`)."""
        return self._reports.engine_stats(self._startup_s, self.aborted_abandoned)

    def __del__(self):
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.shutdown()
            # vLLM kills an engine process that does not exit in time; its /dev/shm segments stay.
            remove_orphaned_segments(self._shm_before)
