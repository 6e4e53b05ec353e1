"""The ingress's admission door (`serve_app.policy.admission_door`) wired to the router deployment:
refusals raised as OpenAI-shaped 429s, the router asked in the background, refusal counts sent back."""
from __future__ import annotations

import asyncio
import logging
import time

from ray.serve.handle import DeploymentHandle

from serve_app.deployments.calls import answer_within
from serve_app.openai_api import ApiError
from serve_app.policy.admission_door import DOOR_HOLD_S, AdmissionDoor
from serve_app.policy.priority_classes import PriorityClasses
from serve_app.telemetry.tracing import RequestSpan

logger = logging.getLogger("serve_app.ingress")
REFUSAL_COUNTS_FLUSH_S = 0.25


class RouterDoor:
    def __init__(self, classes: PriorityClasses, router: DeploymentHandle):
        self._door = AdmissionDoor(classes)
        self._router = router
        self._flush: asyncio.TimerHandle | None = None

    def refuse_if_closed(self, class_name: str, span: RequestSpan, *, count_as: str | None = None) -> None:
        """429 now if the router is refusing `class_name` (or a class above it); `count_as` books the
        refusal under another class (the one the request would have had, when only its caller's
        ceiling is known yet)."""
        now = time.monotonic()
        refusal = self._door.check(class_name, now, count_as=count_as)
        if self._door.needs_query(now):
            asyncio.ensure_future(self._ask_router())
        if refusal is None:
            return
        span.set(llm__refused_at="door")
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(REFUSAL_COUNTS_FLUSH_S, self._flush_counts)
        booked = count_as or class_name
        message = (refusal.message if refusal.class_name == booked else
                   f"the service is at capacity for priority class {booked!r}: requests of class "
                   f"{refusal.class_name!r} at or above it are being refused")
        raise ApiError(429, message, error_type="rate_limit_error", code="overloaded",
                       headers={"Retry-After": str(refusal.retry_after_s)})

    def router_refused(self, class_name: str, message: str, retry_after_s: int) -> None:
        self._door.router_refused(class_name, message, retry_after_s, time.monotonic())

    def router_admitted(self, class_name: str) -> None:
        self._door.router_admitted(class_name)

    async def _ask_router(self) -> None:
        answer = await answer_within(self._router.admission_preview.remote(), DOOR_HOLD_S)
        if isinstance(answer, Exception):  # the door opens rather than stay shut on a silent router
            logger.warning("admission preview failed: %s", type(answer).__name__)
            self._door.query_failed(time.monotonic())
            return
        self._door.query_answered(answer, time.monotonic())

    def _flush_counts(self) -> None:
        """Door refusals go to the router's counters (stats, metrics, autoscaling's refused share)."""
        self._flush = None
        counts = self._door.take_refusal_counts()
        if counts:
            self._router.record_door_refusals.remote(counts)
