"""An ingress replica's cursors into each LLM replica's KV event log (`serve_app.kv_events`), applied to
its router core's cache index, for `router.routing: precise_prefix`."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from ray.serve.handle import DeploymentHandle

from serve_app.deployments.calls import answer_within
from serve_app.policy.router_contract import RouterContract
from serve_app.prompt_blocks import PromptBlockKeys
from serve_app.telemetry.log_names import service_logger

logger = service_logger("router")
PULL_PERIOD_S = 0.1  # while routing: a prefix stored a step ago attracts its followers from the next pull on
IDLE_PULL_PERIOD_S = 1.0  # with no request routed lately: the log keeps what comes meanwhile
PULL_TIMEOUT_S = 2.0


class CacheEventsLink:
    def __init__(self, replicas: DeploymentHandle, core: RouterContract, prompt_blocks: PromptBlockKeys):
        self._replicas = replicas
        self._core = core
        self._prompt_blocks = prompt_blocks
        self._cursors: dict[str, int] = {}
        self.failures = 0

    async def pull_forever(self, replica_ids: Callable[[], Iterable[str]], routing: Callable[[], bool]) -> None:
        """Pull from the replicas `replica_ids` names, often while `routing` says requests are being routed."""
        while True:
            await self.pull_once(list(replica_ids()))
            await asyncio.sleep(PULL_PERIOD_S if routing() else IDLE_PULL_PERIOD_S)

    async def pull_once(self, replica_ids: list[str]) -> None:
        for gone in set(self._cursors) - set(replica_ids):
            del self._cursors[gone]  # the core drops its index entries with the replica
        await asyncio.gather(*(self._pull(replica_id) for replica_id in replica_ids))

    async def _pull(self, replica_id: str) -> None:
        page = await answer_within(self._replicas.kv_cache_events.remote(
            self._cursors.get(replica_id, 0), target_replica=replica_id), PULL_TIMEOUT_S)
        if isinstance(page, BaseException):  # a dying replica: routing goes on with what is known
            self.failures += 1
            logger.debug("KV events of %s not pulled: %s", replica_id, type(page).__name__)
            return
        if page is None:
            return
        if page.block_size:
            # Prompts are keyed in the engines' own block size, once they have said it.
            self._prompt_blocks.block_size = page.block_size
            if page.capacity_blocks:
                self._core.set_cache_capacity(replica_id, page.capacity_blocks, page.block_size)
        self._core.apply_cache_events(replica_id, page.events)
        self._cursors[replica_id] = page.next_seq
