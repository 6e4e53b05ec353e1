"""What an LLM replica reports about itself: to the LLM replicas' routers (routing stats), the controller
(engine load), Ray Serve's autoscaler (custom metrics) and anyone asking (`engine_stats`)."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from serve_app.deployments.engine_watchdog import engine_process_ids
from serve_app.engine_stats import EngineSnapshot
from serve_app.replica_ledger import ReplicaLedger
from serve_app.telemetry.autoscaling_signals import replica_stats
from serve_app.telemetry.log_names import service_logger

logger = service_logger("replica")


class ReplicaReports:
    def __init__(self, replica_id: str, engine: Any, snapshot: EngineSnapshot, ledger: ReplicaLedger, delivery: Any,
                 delivery_mode: str, process: Any, controller_link: Any = None, controller: Any = None,
                 metrics: bool = False):
        """`engine`: vLLM's `AsyncLLM`; `delivery`: the replica's `ReplicaDelivery`; `process`: what
        `prepare_process_for_serving` returned; `controller_link` / `controller`: the replica's
        `ControllerLink` and the controller's handle (None: no controller); `metrics`: export the engine's
        gauges as Ray metrics (`telemetry.metrics`)."""
        self._replica_id = replica_id
        self._engine = engine
        self._snapshot = snapshot
        self._ledger = ledger
        self._delivery = delivery
        self._delivery_mode = delivery_mode
        self._process = process
        self._controller_link = controller_link
        self._controller = controller
        self._metrics = None
        if metrics:
            from serve_app.telemetry.metrics import ReplicaMetrics
            self._metrics = ReplicaMetrics(replica_id)

    def routing_stats(self) -> dict[str, Any]:
        return {
            "engine_unfinished_requests": self._engine.output_processor.get_num_unfinished_requests(),
            "window_cap": self._controller_link.window_cap if self._controller_link else None,
            "outstanding_tokens": self._ledger.outstanding_tokens,
            "in_flight": self._ledger.in_flight,
            **self._snapshot.as_dict(),
        }

    async def autoscaling_stats(self) -> dict[str, float]:
        """In flight, KV usage, SLO attainment per class here, and the router's queue per class (via the
        controller)."""
        queue: dict[str, float] = {}
        rates: dict[str, tuple[float, float]] = {}
        if self._controller is not None:
            try:
                queue = await self._controller.router_queue_depths.remote()
                rates = await self._controller.router_capacity_rates.remote()
            except Exception as error:  # the other signals still count
                logger.warning("router queue depths unavailable: %s", type(error).__name__)
        return replica_stats(self._ledger.in_flight, self._snapshot.kv_cache_usage, queue,
                             self._ledger.slo_attainment(time.monotonic()), rates)

    def engine_load(self) -> dict:
        """For the controller's status: the engine's running and waiting requests, its recent inter-token
        times, this process's loop lag and garbage-collector pauses, and its recent delivery calls to the
        ingress replicas."""
        stalls = self._process.loop_stalls() or {}
        lag = stalls.get("lag_recent") or {}
        return {"num_running": self._snapshot.num_running, "num_waiting": self._snapshot.num_waiting,
                "loop_lag_p99_s": lag.get("p99_s"), "loop_lag_max_s": lag.get("max_s"),
                "cpu_recent": stalls.get("cpu_recent"), "gc_pauses": self._process.gc_pauses.summary(),
                "inter_token_recent": self._snapshot.recent_inter_token.summary(),
                "delivery_calls": self._delivery.outbox.recent_calls()}

    def observe_engine(self) -> None:
        if self._metrics is not None:
            snap = self._snapshot
            self._metrics.observe(snap.kv_cache_usage, snap.num_running, snap.num_waiting, snap.num_preemptions_total)
            self._metrics.observe_speculation(snap.spec_drafted_tokens, snap.spec_accepted_tokens)

    async def log_engine_stats_forever(self) -> None:
        """vLLM's own periodic throughput/KV log lines, as `vllm serve` prints them."""
        while True:
            await asyncio.sleep(10)
            await self._engine.do_log_stats()

    def engine_stats(self, startup_s: float, aborted_abandoned: int) -> dict[str, Any]:
        config = self._engine.vllm_config
        return {
            "replica_id": self._replica_id,
            "startup_s": startup_s,
            "engine_pids": engine_process_ids(self._engine),
            "num_gpu_blocks": config.cache_config.num_gpu_blocks,
            "block_size": config.cache_config.block_size,
            "max_num_seqs": config.scheduler_config.max_num_seqs,
            "max_num_batched_tokens": config.scheduler_config.max_num_batched_tokens,
            "reconciliation": self._controller_link.reconciliation if self._controller_link else None,
            "completed": self._ledger.completed,
            "prompt_tokens": self._ledger.prompt_tokens,
            "cached_prompt_tokens": self._ledger.cached_prompt_tokens,
            "delivery": self._delivery_mode,
            **self._delivery.stats(),
            "aborted_abandoned": aborted_abandoned,
            "gc_pauses": self._process.gc_pauses.summary(),
            "loop_stalls": self._process.loop_stalls(),
            **self.routing_stats(),
        }
