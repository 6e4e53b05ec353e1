"""Admission control: predict how long a new request would queue and reject early.

Rejecting at the door with Retry-After is cheaper than letting a request time out in the queue.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from serve_app.policy.priority_classes import PriorityClasses

# Absorbs float noise so e.g. 2.0000000001 s of predicted wait does not round up to 3 s.
_CEIL_EPSILON = 1e-9
_BUCKET_S = 1.0  # busy seconds per bucket of the sliding window


@dataclass(frozen=True)
class AdmissionDecision:
    """Outcome of one admission check; retry_after_s feeds the HTTP Retry-After header."""

    admitted: bool
    predicted_wait_s: float
    retry_after_s: int
    reason: str


@dataclass(frozen=True)
class AdmissionPreview:
    """What admission would do with the next requests of a class: admit `room` more, then refuse."""

    room: int
    message: str  # why the one after those would be refused
    retry_after_s: int


class AdmissionController:
    """Admits a request when its predicted queue wait fits its class's queue deadline.

    Service rate is completions per second of busy time (some request running) over the last
    `window_s` busy seconds, blended with the prior as `prior_s` seconds of pseudo-observation.
    Busy time, not gaps between completions: an engine finishes a wave of requests in one step, and
    an average of gaps between those completions (many zero) once put the rate at 481/s where 58/s
    were served, so a burst was admitted to wait past its deadline (503) instead of refused at once.
    Idle time is not counted, so a lull does not lower the rate.
    """

    def __init__(
        self,
        classes: PriorityClasses,
        initial_service_rate_rps: float,
        window_s: float = 30.0,
        prior_s: float = 2.0,
        warmup_completions: int = 0,
    ) -> None:
        if not initial_service_rate_rps > 0:
            raise ValueError(f"initial_service_rate_rps must be > 0, got {initial_service_rate_rps}")
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if not prior_s > 0:
            raise ValueError(f"prior_s must be > 0, got {prior_s}")
        self._classes = classes
        self._prior_rps = initial_service_rate_rps
        self._prior_s = prior_s
        self._window_s = window_s
        # [busy seconds, completions] per bucket of about _BUCKET_S busy seconds, oldest first.
        self._buckets: deque[list[float]] = deque([[0.0, 0.0]])
        self._busy = False
        self._last_s: float | None = None
        # Until this many completions are measured the rate is a guess: admit, and let the queue
        # deadline (503) catch what waits too long rather than refusing a cold burst on a prior.
        self._warmup_completions = warmup_completions
        self._completions = 0

    @property
    def service_rate_rps(self) -> float:
        busy_s = sum(bucket[0] for bucket in self._buckets)
        completions = sum(bucket[1] for bucket in self._buckets)
        return (completions + self._prior_rps * self._prior_s) / (busy_s + self._prior_s)

    def set_busy(self, now: float, busy: bool) -> None:
        """Whether any request is running from `now` on (time since the last call counts as before)."""
        self._account(now)
        self._busy = busy

    def record_completion(self, now: float) -> None:
        """Note that one request finished at `now`."""
        self._account(now)
        self._completions += 1
        self._buckets[-1][1] += 1

    def _account(self, now: float) -> None:
        elapsed = 0.0 if self._last_s is None else max(0.0, now - self._last_s)
        self._last_s = now if self._last_s is None else max(self._last_s, now)
        if not self._busy or elapsed == 0.0:
            return
        self._buckets[-1][0] += elapsed
        if self._buckets[-1][0] >= _BUCKET_S:
            self._buckets.append([0.0, 0.0])
            while sum(bucket[0] for bucket in self._buckets) - self._buckets[0][0] >= self._window_s:
                self._buckets.popleft()

    def predicted_wait_s(self, queued_ahead: int, free_slots: int) -> float:
        """Seconds until a new request starts: completions needed before it gets a slot / rate."""
        completions_needed = max(0, queued_ahead + 1 - max(0, free_slots))
        return completions_needed / self.service_rate_rps

    def room(self, class_name: str, queued_ahead: int, free_slots: int) -> int | None:
        """How many more `class_name` requests `decide` would admit now, one after another (None: no
        limit while warming up)."""
        if self._completions < self._warmup_completions:
            return None
        deadline_s = self._classes.get(class_name).queue_deadline_s
        # The n-th more request is admitted while (queued_ahead + n - free_slots) / rate <= deadline.
        completions_within_deadline = math.floor(deadline_s * self.service_rate_rps + _CEIL_EPSILON)
        return max(0, completions_within_deadline + max(0, free_slots) - queued_ahead)

    def decide(self, class_name: str, queued_ahead: int, free_slots: int, now: float) -> AdmissionDecision:
        """Admit or reject a new request of `class_name`.

        `queued_ahead` counts queued requests of the same or a better class; a free slot not
        already claimed by one of them admits at once. `now` is unused by this rate model.
        """
        if queued_ahead < 0:
            raise ValueError(f"queued_ahead must be >= 0, got {queued_ahead}")
        deadline_s = self._classes.get(class_name).queue_deadline_s
        if free_slots > queued_ahead:
            return AdmissionDecision(True, 0.0, 1, "free_slot")
        wait_s = self.predicted_wait_s(queued_ahead, free_slots)
        retry_after_s = max(1, math.ceil(wait_s - _CEIL_EPSILON))
        if self._completions < self._warmup_completions:
            return AdmissionDecision(True, wait_s, retry_after_s, "warming_up")
        if wait_s <= deadline_s:
            return AdmissionDecision(True, wait_s, retry_after_s, "predicted_wait_within_deadline")
        return AdmissionDecision(
            False,
            wait_s,
            retry_after_s,
            f"predicted wait {wait_s:.2f}s exceeds {class_name!r} queue deadline {deadline_s:.2f}s",
        )
