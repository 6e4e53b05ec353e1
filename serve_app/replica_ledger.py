"""One LLM replica's books: what it holds now (the routers' load signal), the lengths of the requests
it completed (the controller sizes windows from them) and whether each met its class's SLO (an
autoscaling signal). Pure: no Ray, no vLLM, time passed in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from serve_app.statistics import meets_slo, tpot_s
from serve_app.telemetry.autoscaling_signals import SloWindow


@dataclass(frozen=True)
class RequestOutcome:
    """How one request ended on this replica."""

    class_name: str
    finish_reason: str | None  # vLLM's, None unless every engine request finished normally
    prompt_tokens: int
    generated_tokens: int
    ttft_s: float | None
    duration_s: float
    # The response reached its end and someone was still reading it: a request whose client left (or
    # whose ingress died) may still show a finish reason for the choices that ended before the abort.
    delivered_whole: bool
    cached_prompt_tokens: int = 0  # found in the engine's prefix cache

    @property
    def served(self) -> bool:
        return self.finish_reason is not None and self.delivered_whole


class ReplicaLedger:
    def __init__(self, slos: Mapping[str, tuple[float | None, float | None]], slo_window_s: float):
        """`slos`: class -> (TTFT SLO, TPOT SLO) in seconds."""
        self._slos = dict(slos)
        self._slo_window = SloWindow(slo_window_s)
        # request id -> tokens it may still hold in KV cache (estimated prompt + max tokens)
        self._outstanding_tokens: dict[str, int] = {}
        self._served_lengths: list[tuple[int, int]] = []
        self.completed = 0
        self.prompt_tokens = self.cached_prompt_tokens = 0  # the engine's prefix cache hit rate is their ratio

    def start(self, request_id: str, cost_tokens: int) -> None:
        self._outstanding_tokens[request_id] = cost_tokens

    def finish(self, request_id: str, outcome: RequestOutcome, now: float) -> None:
        self._outstanding_tokens.pop(request_id, None)
        self.completed += 1
        self.prompt_tokens += outcome.prompt_tokens
        self.cached_prompt_tokens += outcome.cached_prompt_tokens
        if not outcome.served:  # a request cut short says nothing about lengths or latency
            return
        self._served_lengths.append((outcome.prompt_tokens, outcome.generated_tokens))
        if outcome.class_name in self._slos:
            ttft_slo, tpot_slo = self._slos[outcome.class_name]
            tpot = tpot_s(outcome.duration_s, outcome.ttft_s, outcome.generated_tokens)
            self._slo_window.observe(outcome.class_name, meets_slo(outcome.ttft_s, tpot, ttft_slo, tpot_slo), now)

    def take_served_lengths(self) -> list[tuple[int, int]]:
        """(prompt, generated) tokens of requests served since the last call."""
        lengths, self._served_lengths = self._served_lengths, []
        return lengths

    @property
    def in_flight(self) -> int:
        return len(self._outstanding_tokens)

    @property
    def outstanding_tokens(self) -> int:
        return sum(self._outstanding_tokens.values())

    def slo_attainment(self, now: float) -> dict[str, tuple[float, int]]:
        return self._slo_window.attainment(now)
