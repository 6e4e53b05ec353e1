"""The ingress's admission door (`serve_app.policy.admission_door`) over the ingress's own router
core: refusals raised as OpenAI-shaped 429s before the body is read, refusal counts booked in the core."""
from __future__ import annotations

import time
from typing import Callable, Mapping

from serve_app.openai_api import ApiError
from serve_app.policy.admission import AdmissionPreview
from serve_app.policy.admission_door import AdmissionDoor
from serve_app.policy.priority_classes import PriorityClasses
from serve_app.telemetry.tracing import RequestSpan


class LocalDoor:
    def __init__(self, classes: PriorityClasses, preview: Callable[[], Mapping[str, AdmissionPreview | None]],
                 record_refusals: Callable[[Mapping[str, int]], None]):
        self._door = AdmissionDoor(classes)
        self._preview = preview
        self._record_refusals = record_refusals

    def refuse_if_closed(self, class_name: str, span: RequestSpan, *, count_as: str | None = None) -> None:
        """429 now if the core is refusing `class_name` (or a class above it); `count_as` books the
        refusal under another class (the one the request would have had, when only its caller's
        ceiling is known yet)."""
        now = time.monotonic()
        refusal = self._door.check(class_name, now, count_as=count_as)
        if self._door.needs_query(now):
            self._door.query_answered(self._preview(), now)  # the core is in this process: asked at once
        if refusal is None:
            return
        span.set(llm__refused_at="door")
        self._record_refusals(self._door.take_refusal_counts())
        booked = count_as or class_name
        message = (refusal.message if refusal.class_name == booked else
                   f"the service is at capacity for priority class {booked!r}: requests of class "
                   f"{refusal.class_name!r} at or above it are being refused")
        raise ApiError(429, message, error_type="rate_limit_error", code="overloaded",
                       headers={"Retry-After": str(refusal.retry_after_s)})

    def router_refused(self, class_name: str, message: str, retry_after_s: int) -> None:
        preview = self._preview().get(class_name)
        self._door.router_refused(class_name, message, retry_after_s, time.monotonic(),
                                  room_for_new_caller=1 if preview is None else preview.room)

    def router_admitted(self, class_name: str) -> None:
        self._door.router_admitted(class_name)
