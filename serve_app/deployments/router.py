"""The router deployment between the ingress and the LLM replicas.

Every request passes through `submit`, which returns when the request has ended, so the
router always knows what each replica is running. The replica is picked by Ray Serve's
request router for LLMReplica (`LeastOutstandingTokensRouter`); tokens flow from the replica
straight to the ingress replica (`serve_app.delivery`), not through here.
"""
from __future__ import annotations

import logging
from typing import Any

from ray.serve.handle import DeploymentHandle

from serve_app.generation import GenerationRequest, RunSummary

logger = logging.getLogger("serve_app.router")


class Router:
    def __init__(self, replicas: DeploymentHandle, config: dict):
        self._replicas = replicas
        self._config = config
        self._in_flight = 0
        self._served = 0
        self._failed = 0

    async def submit(self, request: GenerationRequest, reply_to: str) -> RunSummary:
        self._in_flight += 1
        try:
            summary = await self._replicas.run.remote(request, reply_to)
        except Exception:
            self._failed += 1
            raise
        finally:
            self._in_flight -= 1
        self._served += 1
        return summary

    async def stats(self) -> dict[str, Any]:
        return {"in_flight": self._in_flight, "served": self._served, "failed": self._failed}
