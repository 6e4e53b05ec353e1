"""Routing inside each ingress replica: the request's one Ray hop goes straight to its LLM replica.

A thin shell over `serve_app.policy.router_core.RouterCore`, one per ingress replica: `submit`
admits or refuses a request, holds it in the priority queue until a replica's window has room,
calls that replica and returns when the request has ended. Tokens flow from the replica straight
back to this ingress replica (`serve_app.delivery`). The windows are this ingress's leases of each
replica's window (`serve_app.policy.window_leases`), refreshed from the controller twice a second,
so routing grows with ingress replicas and no single process sits on every request.
"""
from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Awaitable, Callable

from ray.serve.handle import DeploymentHandle

from serve_app.telemetry.autoscaling_signals import capacity_counts
from serve_app.config import AppConfig
from serve_app.deployments.cache_events_link import CacheEventsLink
from serve_app.deployments.door import LocalDoor
from serve_app.deployments.errors import REPLICA_LOST, EngineDied, MisroutedCall, ReplicaFailed
from serve_app.deployments.supervision import start_supervised
from serve_app.direct_link import ReplicaConnectionLost
from serve_app.generation import GenerationRequest, RunSummary
from serve_app.policy.deadline_sweep import DeadlineSweep
from serve_app.policy.response_holders import ResponseHolders
from serve_app.policy.router_contract import Refusal, RouterContract
from serve_app.policy.router_core import RouterCore
from serve_app.policy.router_settings import CACHE_INDEX_ROUTINGS
from serve_app.prompt_blocks import PromptBlockKeys
from serve_app.statistics import tpot_s
from serve_app.telemetry.log_names import service_logger
from serve_app.telemetry.tracing import RequestSpan

logger = service_logger("router")
EXPIRY_PERIOD_S = 0.05
REPLICA_REFRESH_PERIOD_S = 0.5
CONTROLLER_SILENCE_S = 3.0
ROUTING_LATELY_S = 5.0  # a request admitted this recently: KV events are pulled at their fast pace


def _latencies(summary: RunSummary) -> tuple[float | None, float | None]:
    """TTFT and time per output token as the replica measured them (queue wait excluded)."""
    return summary.ttft_s, tpot_s(summary.duration_s, summary.ttft_s, summary.num_generated)


def _served(summary: RunSummary | None) -> bool:
    """Finished, or answered by vLLM with a client error (a 400 is a served request, not a failure)."""
    if summary is None:
        return False
    return summary.finish_reason is not None or (summary.status is not None and summary.status < 500)


class Dispatcher:
    def __init__(self, ingress_id: str, replicas: DeploymentHandle, controller: DeploymentHandle | None,
                 config: AppConfig, clock: Callable[[], float] = time.monotonic,
                 running_on: Callable[[str], AbstractContextManager[None]] = lambda replica_id: nullcontext(),
                 run_call: Callable[[str, GenerationRequest], Awaitable[RunSummary]] | None = None):
        """`running_on`: the stream from that replica open meanwhile (pull, direct); `run_call`: direct's run."""
        self._ingress_id = ingress_id
        self._running_on = running_on
        self._run_call = run_call
        self._config = config
        self._replicas = replicas
        self._controller = controller
        self._clock = clock
        self._callers = {caller.name: caller for caller in self._config.api_key_registry().callers}
        self.classes = self._config.policy_classes()
        self._core: RouterContract = RouterCore(self.classes, self._config.router, random.Random())
        self._waiters: dict[str, asyncio.Future] = {}
        self._background: list[asyncio.Task] = []
        self._controller_answered_at = self._refreshed_at = -1e18
        self._refresh_failure: str | None = None
        self._metrics = None
        if self._config.telemetry.metrics:
            from serve_app.telemetry.metrics import RouterMetrics
            self._metrics = RouterMetrics()
        self.door = LocalDoor(self.classes, lambda: self._core.admission_preview(self._clock()),
                              self._core.record_door_refusals)
        routing = self._config.router.routing
        # Cache-aware routing needs each prompt's tokens, as the engines will cache them.
        self._prompt_blocks = (PromptBlockKeys(self._config.model.resolved_path())
                               if routing in CACHE_INDEX_ROUTINGS else None)
        self._cache_events = (CacheEventsLink(replicas, self._core, self._prompt_blocks)
                              if self._prompt_blocks is not None and routing == "precise_prefix" else None)
        self._leased: list[str] = []
        self._last_admitted_at = -1e18
        self._response_holders = ResponseHolders()

    def start(self) -> None:
        """Start the expiry and lease-refresh loops (needs the running event loop)."""
        if not self._background:
            self._background = [start_supervised(self._expire_forever), start_supervised(self._refresh_replicas_forever)]
            if self._cache_events is not None:
                self._background.append(start_supervised(lambda: self._cache_events.pull_forever(
                    lambda: self._leased, lambda: self._clock() - self._last_admitted_at < ROUTING_LATELY_S)))

    @property
    def in_flight(self) -> int:
        return len(self._waiters) + self._core.running_count

    @property
    def replica_ids(self) -> list[str]:
        """The LLM replicas this ingress holds leases on (those it routes to)."""
        return list(self._leased)

    def response_holder(self, response_id: str) -> str | None:
        """The LLM replica that made stored response `response_id`, if it was relayed here and that replica
        is still routed to; None: ask the replicas."""
        return self._response_holders.holder(response_id, self._leased)

    async def submit(self, request: GenerationRequest) -> RunSummary | Refusal:
        """Run `request` on a replica (its response parts come back to this ingress replica), or refuse it."""
        caller = self._callers[request.caller]
        prefix_key = request.prefix_key if self._config.router.routing == "first_block_affinity" else None
        blocks, prompt_tokens = ((), request.estimated_prompt_tokens) if self._prompt_blocks is None else \
            await asyncio.to_thread(self._prompt_blocks.keys, request.path, request.body, request.estimated_prompt_tokens)
        queued = RequestSpan("router.queue_wait", parent=request.trace_context,
                             attributes={"llm.priority_class": request.priority_class, "llm.caller": request.caller})
        refusal = self._core.admit(request.request_id, request.priority_class, caller, request.cost_tokens,
                                   self._clock(), prefix_key, prefix_blocks=blocks,
                                   prompt_tokens=prompt_tokens, first_token_seen=request.streamed,
                                   replica_id=request.bound_replica)
        if refusal is not None:
            queued.fail(refusal.message, llm__outcome="refused", http__response__status_code=refusal.status)
            queued.end()
            return refusal
        self._last_admitted_at = self._clock()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[request.request_id] = waiter
        self._pump()
        try:
            outcome = await waiter
        except asyncio.CancelledError:
            # The client left while queued (or just as it was dispatched): free what it held.
            self._waiters.pop(request.request_id, None)
            self._core.cancel(request.request_id, self._clock())
            self._pump()
            queued.set(llm__outcome="cancelled")
            queued.end()
            raise
        if self._metrics is not None:
            self._metrics.observe_queue_wait(request.priority_class, time.monotonic() - queued.started)
        if isinstance(outcome, Refusal):
            queued.fail(outcome.message, llm__outcome="expired", http__response__status_code=outcome.status)
            queued.end()
            return outcome
        queued.set(llm__outcome="dispatched", llm__replica=outcome)
        queued.end()
        return await self._run_on(outcome, request)

    async def _run_on(self, replica_id: str, request: GenerationRequest) -> RunSummary:
        summary: RunSummary | None = None
        span = RequestSpan("router.dispatch", parent=request.trace_context, attributes={"llm.replica": replica_id})
        try:
            sent = dataclasses.replace(request, trace_context=span.carrier(), dispatched_at=time.time())
            with self._running_on(replica_id):
                summary = await (self._run_call(replica_id, sent) if self._run_call is not None else
                                 self._replicas.run.remote(sent, self._ingress_id, target_replica=replica_id))
            span.set(llm__completion_tokens=summary.num_generated, llm__finish_reason=summary.finish_reason)
            if summary.response_id is not None:
                self._response_holders.learn(summary.response_id, replica_id)
            return summary
        except (*REPLICA_LOST, MisroutedCall, ReplicaConnectionLost, EngineDied) as error:
            # Misrouted: the LLM replicas' router no longer lists the target, which has died or is draining.
            # EngineDied: its engine died before the request's response began; the replica follows.
            logger.warning("replica %s lost (%s); no longer routing to it", replica_id, type(error).__name__)
            span.fail("replica lost")
            self._core.replica_failed(replica_id)
            if self._controller is not None:
                self._controller.forget_replica.remote(replica_id)
            raise ReplicaFailed(f"LLM replica {replica_id} died") from None
        except asyncio.CancelledError:
            self._core.cancel(request.request_id, self._clock())
            raise
        finally:
            span.end()
            ttft, tpot = _latencies(summary) if summary is not None else (None, None)
            self._core.finish(request.request_id, self._clock(), ok=_served(summary), ttft_s=ttft, tpot_s=tpot,
                              prompt_tokens=summary.num_prompt_tokens if summary is not None else 0,
                              cached_prompt_tokens=summary.num_cached_prompt_tokens if summary is not None else 0,
                              engine_tpot_s=summary.engine_inter_token_s if summary is not None else None)
            self._pump()

    def first_token(self, request_id: str) -> None:
        """The first part of a dispatched request's answer reached this ingress (its prompt is prefilled):
        lower-class requests held for `router.lower_class_prefill_tokens` may start."""
        self._core.first_token(request_id, self._clock())
        if self._config.router.lower_class_prefill_tokens is not None:
            self._pump()

    def _pump(self) -> None:
        """Hand queued requests to replicas while their windows have room."""
        for dispatch in self._core.take_dispatches(self._clock()):
            waiter = self._waiters.pop(dispatch.request_id, None)
            if waiter is None or waiter.done():
                self._core.cancel(dispatch.request_id, self._clock())
                continue
            waiter.set_result(dispatch.replica_id)

    async def _expire_forever(self) -> None:
        sweep = DeadlineSweep(EXPIRY_PERIOD_S, self._clock())
        while True:
            await asyncio.sleep(EXPIRY_PERIOD_S)
            now = self._clock()
            # Refused before their deadline passes, even when a busy loop wakes this sweep late.
            for request_id, refusal in self._core.expire(now, ahead_s=sweep.look_ahead_s(now)):
                waiter = self._waiters.pop(request_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(refusal)
            # Completions elsewhere may have opened windows since the last pump.
            self._pump()

    async def _refresh_replicas_forever(self) -> None:
        while True:
            await self.refresh_replicas()
            await asyncio.sleep(REPLICA_REFRESH_PERIOD_S)

    async def refresh_replicas(self) -> None:
        """Take this ingress's leases of the live replicas' windows from the controller, telling it the
        requests held here per class (which the leases follow) and the queue for autoscaling."""
        if self._controller is None:
            return
        stats = self._core.stats()  # sorts every class's wait samples: once per refresh
        classes = stats["classes"]
        demand = [classes[name]["queued"] + classes[name]["running"] for name in self.classes.names]
        try:
            leases = await asyncio.wait_for(self._controller.lease_windows.remote(
                self._ingress_id, demand, {name: c["queued"] for name, c in classes.items()},
                {name: capacity_counts(c) for name, c in classes.items()}), CONTROLLER_SILENCE_S)
        except Exception as error:  # a controller restart must not stop routing to known replicas
            logger.warning("lease refresh failed: %s", type(error).__name__)
            self._refresh_failure = f"the controller did not answer ({type(error).__name__})"
            return
        self._controller_answered_at = self._clock()
        try:
            if leases is not None:  # None: a restarted controller still re-learning the replicas
                self._core.set_replicas(leases)
                self._leased = list(leases)
            self._pump()
        except Exception as error:  # the loop is restarted (`_supervised`); health says why it is not current
            self._refresh_failure = f"the leases could not be applied ({type(error).__name__}: {error})"
            raise
        self._refreshed_at, self._refresh_failure = self._clock(), None
        if self._metrics is not None:
            self._metrics.observe_stats(stats)

    def health(self) -> dict[str, Any]:
        """What the health route needs: replicas this ingress can send to, whether the controller
        answered its last refresh and whether the replica list and leases are current."""
        now = self._clock()
        return {"routable_replicas": self._core.routable_count,
                "started": self._controller is None or self._controller_answered_at > -1e18,
                "controller_answering": self._controller is None
                or now - self._controller_answered_at <= CONTROLLER_SILENCE_S,
                "routing_current": self._controller is None or now - self._refreshed_at <= CONTROLLER_SILENCE_S,
                "refresh_failure": self._refresh_failure}

    def stats(self) -> dict[str, Any]:
        """Queue depth and waits per class, window (lease) per replica, admitted/refused counts, and how
        continuations of stored responses found their replica."""
        return {**self._core.stats(self._clock()), "stored_responses": self._response_holders.stats()}
