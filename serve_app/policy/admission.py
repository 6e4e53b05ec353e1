"""Admission control: predict how long a new request would queue and reject early.

Rejecting at the door with Retry-After is cheaper than letting a request time out in the queue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from serve_app.policy.priority_classes import PriorityClasses

# Absorbs float noise so e.g. 2.0000000001 s of predicted wait does not round up to 3 s.
_CEIL_EPSILON = 1e-9


@dataclass(frozen=True)
class AdmissionDecision:
    """Outcome of one admission check; retry_after_s feeds the HTTP Retry-After header."""

    admitted: bool
    predicted_wait_s: float
    retry_after_s: int
    reason: str


class AdmissionController:
    """Admits a request when its predicted queue wait fits its class's queue deadline.

    Service rate (completions/s) is an EWMA over inter-completion gaps, seeded by a prior.
    """

    def __init__(
        self,
        classes: PriorityClasses,
        initial_service_rate_rps: float,
        ewma_alpha: float = 0.1,
        max_gap_s: float = 10.0,
        warmup_completions: int = 0,
    ) -> None:
        if not initial_service_rate_rps > 0:
            raise ValueError(f"initial_service_rate_rps must be > 0, got {initial_service_rate_rps}")
        if not 0 < ewma_alpha <= 1:
            raise ValueError(f"ewma_alpha must be in (0, 1], got {ewma_alpha}")
        if not max_gap_s > 0:
            raise ValueError(f"max_gap_s must be > 0, got {max_gap_s}")
        self._classes = classes
        self._alpha = ewma_alpha
        self._max_gap_s = max_gap_s
        # The prior acts as the first gap sample, so early measurements blend in gradually.
        self._mean_gap_s = 1.0 / initial_service_rate_rps
        self._last_completion_s: float | None = None
        # Until this many completions are measured the rate is a guess: admit, and let the queue
        # deadline (503) catch what waits too long rather than refusing a cold burst on a prior.
        self._warmup_completions = warmup_completions
        self._completions = 0

    @property
    def service_rate_rps(self) -> float:
        # Simultaneous completions can drive the mean gap to ~0; keep the rate finite.
        return 1.0 / max(self._mean_gap_s, 1e-6)

    def record_completion(self, now: float) -> None:
        """Note that one request finished at `now`."""
        self._completions += 1
        if self._last_completion_s is not None:
            # Idle periods are not slow service: cap the gap so one lull cannot crash the rate.
            gap_s = min(max(0.0, now - self._last_completion_s), self._max_gap_s)
            self._mean_gap_s += self._alpha * (gap_s - self._mean_gap_s)
        self._last_completion_s = now

    def predicted_wait_s(self, queued_ahead: int, free_slots: int) -> float:
        """Seconds until a new request starts: completions needed before it gets a slot / rate."""
        completions_needed = max(0, queued_ahead + 1 - max(0, free_slots))
        return completions_needed / self.service_rate_rps

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
