"""An LLM replica's side of the controller: the batch-size plan before its engine starts, its KV
allocation once it has, then a load report every period, answered with its window cap."""
from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

from serve_app.config import AppConfig
from serve_app.deployments.controller import LOAD_REPORT_PERIOD_S
from serve_app.engine_args import detect_device
from serve_app.replica_ledger import ReplicaLedger
from serve_app.telemetry.log_names import service_logger

logger = service_logger("replica")


class ControllerLink:
    def __init__(self, controller: Any, replica_id: str, config: AppConfig):
        self._controller = controller
        self._replica_id = replica_id
        self._config = config
        self.plan = self.device = self.reconciliation = None
        self.window_cap: int | None = None

    async def planned_engine_args(self) -> dict[str, Any]:
        """The controller's batch size for this device, except where the config pins a value."""
        engine = self._config.engine
        if engine.kv_sizing is None:
            return {}
        hf_config = json.loads((self._config.model.resolved_path() / "config.json").read_text())
        draft_path = engine.speculative.draft_path(self._config.model.cache_dir) if engine.speculative else None
        draft_hf_config = json.loads((draft_path / "config.json").read_text()) if draft_path else None
        self.device = detect_device()
        self.plan = await self._controller.plan.remote(self._replica_id, self.device, hf_config, draft_hf_config)
        return {key: value for key, value in self.plan.engine_args.items() if key not in engine.pinned_batch_args}

    async def register(self, vllm_config: Any) -> None:
        """Tell the controller this replica's KV allocation (and the plan it was given, so that a
        restarted controller learns it back)."""
        cache = vllm_config.cache_config
        self.reconciliation = await self._controller.report_allocation.remote(
            self._replica_id, cache.num_gpu_blocks, cache.block_size, vllm_config.scheduler_config.max_num_seqs,
            self.plan, self.device)

    async def report_load_forever(self, vllm_config: Any, ledger: ReplicaLedger, preemptions: Callable[[], int],
                                  kv_cache_usage: Callable[[], float | None] = lambda: None,
                                  each_period: Callable[[], None] = lambda: None,
                                  period_s: float = LOAD_REPORT_PERIOD_S,
                                  engine_load: Callable[[], dict | None] = lambda: None,
                                  engine_dead: Callable[[], bool] = lambda: False) -> None:
        """Every `period_s`, until this replica's engine dies: from then on it reports nothing, so that the
        controller, which a router tells of the death and which drops a replica whose reports stop, never
        hands its windows out again. Registering again there put it back in the leases, and an ingress sent
        the requests it was re-routing to the dead engine until all their attempts were spent (CI, a killed
        engine process under load: four whole answers failed with 503 over 3 s)."""
        said_dead = False
        while True:
            await asyncio.sleep(period_s)
            if engine_dead():
                if not said_dead:
                    logger.warning("replica %s: its engine is dead; no more load reports (Ray Serve's health "
                                   "check replaces the replica)", self._replica_id)
                    said_dead = True
                continue
            each_period()
            try:
                cap = await self._controller.report_load.remote(self._replica_id, ledger.take_served_lengths(),
                                                                preemptions(), kv_cache_usage(),
                                                                engine_load=engine_load())
                if cap is None:
                    logger.info("replica %s: the controller does not know this replica; registering again",
                                self._replica_id)
                    await self.register(vllm_config)
                    continue
                self.window_cap = cap
            except Exception as error:  # a controller restart must not take the replica down
                logger.warning("load report failed: %s", type(error).__name__)
