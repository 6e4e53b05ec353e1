"""The router deployment between the ingress and the LLM replicas.

It streams each request from the replica that Ray Serve's request router
(`LeastOutstandingTokensRouter`) picks, re-routes a request whose replica died before its
first token, and ends a broken stream with an error chunk instead of hanging.
"""
from __future__ import annotations

import logging
from typing import Any, AsyncIterator

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.handle import DeploymentHandle

from serve_app.generation import GenerationChunk, GenerationRequest

logger = logging.getLogger("serve_app.router")

REPLICA_LOST = (ActorDiedError, ActorUnavailableError, RayActorError)
MAX_ROUTE_ATTEMPTS = 3


class Router:
    def __init__(self, replicas: DeploymentHandle, config: dict):
        self._replicas = replicas
        self._streams = replicas.options(stream=True)
        self._config = config
        self._served = 0
        self._failed = 0
        self._rerouted = 0

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        for attempt in range(1, MAX_ROUTE_ATTEMPTS + 1):
            started = False
            try:
                async for chunk in self._streams.generate.remote(request):
                    started = True
                    yield chunk
                self._served += 1
                return
            except REPLICA_LOST as error:
                if started or attempt == MAX_ROUTE_ATTEMPTS:
                    self._failed += 1
                    logger.warning("request %s: replica lost mid-stream: %s", request.request_id, type(error).__name__)
                    yield GenerationChunk(text="", token_ids=[], finish_reason="error",
                                          error="the model replica serving this request failed; retry")
                    return
                self._rerouted += 1
                logger.warning("request %s: replica lost before first token, re-routing", request.request_id)

    async def stats(self) -> dict[str, Any]:
        return {"served": self._served, "failed": self._failed, "rerouted": self._rerouted}
