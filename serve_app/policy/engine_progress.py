"""Whether a replica's vLLM engine is stuck: it holds requests and has not stepped for too long.

vLLM's engine core sends its scheduler stats with every step, also one that finished no token, so the
time of the last stats is a heartbeat while the engine has work. A core that hangs (a GPU fault, a
collective that never returns, a stopped process) sends nothing and raises nothing: `vllm serve`'s
requests then wait for ever. The replica asks this watch once a second and, when it answers, kills
the engine process, which turns the hang into vLLM's dead-engine error: started streams end with an
error event, the rest are re-routed, and Ray Serve's health check replaces the replica.

No Ray or vLLM import; the caller passes its clock's `now`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StuckEngine:
    silent_for_s: float
    unfinished_requests: int

    def describe(self) -> str:
        return (f"the engine has held {self.unfinished_requests} request(s) without a step for "
                f"{self.silent_for_s:.1f} s")


class EngineProgressWatch:
    def __init__(self, stuck_after_s: float) -> None:
        if stuck_after_s <= 0:
            raise ValueError("stuck_after_s must be positive")
        self._stuck_after_s = stuck_after_s
        self._last_step_at: float | None = None
        self._busy_since: float | None = None

    def stepped(self, now: float) -> None:
        """The engine reported a step (its stats arrived)."""
        self._last_step_at = now

    def check(self, now: float, unfinished_requests: int) -> StuckEngine | None:
        """Called periodically with the requests the engine holds; a verdict once it has held some for
        `stuck_after_s` without a step. Silence while idle does not count: the clock starts again when
        the engine is next given work."""
        if unfinished_requests <= 0:
            self._busy_since = None
            return None
        if self._busy_since is None:
            self._busy_since = now
        silent_since = self._busy_since if self._last_step_at is None else max(self._busy_since, self._last_step_at)
        silent_for_s = now - silent_since
        if silent_for_s < self._stuck_after_s:
            return None
        return StuckEngine(silent_for_s, unfinished_requests)
