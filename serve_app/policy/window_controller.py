"""Adaptive batching: how many requests the router lets one replica run at once.

The window grows while latency meets its targets and shrinks when it does not, so the
replica runs near its throughput knee without blowing TTFT/TPOT SLOs.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any


class WindowController(ABC):
    """In-flight window for one replica, always an integer within [1, cap]."""

    def __init__(self, initial: int, cap: int, ttft_target_s: float, tpot_target_s: float) -> None:
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        self._cap = cap
        self.set_targets(ttft_target_s, tpot_target_s)
        # Kept fractional so repeated small factors (x1.5 from 1) can still move the window.
        self._size = self._clamped(float(initial))

    @property
    def window(self) -> int:
        return int(self._size)

    @property
    def cap(self) -> int:
        return self._cap

    def set_cap(self, cap: int) -> None:
        """Change the upper bound (e.g. the engine's max_num_seqs); clamps the current window."""
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        self._cap = cap
        self._size = self._clamped(self._size)

    def set_targets(self, ttft_target_s: float, tpot_target_s: float) -> None:
        """Follow the tightest SLO among the classes currently active on the replica."""
        if not (ttft_target_s > 0 and tpot_target_s > 0):
            raise ValueError(f"latency targets must be > 0, got ttft={ttft_target_s} tpot={tpot_target_s}")
        self._ttft_target_s = ttft_target_s
        self._tpot_target_s = tpot_target_s

    @abstractmethod
    def observe(self, ttft_s: float | None, tpot_s: float | None, now: float) -> None:
        """Feed one request's latencies (None when not measured) observed at `now`."""

    def _latency_ratio(self, ttft_s: float | None, tpot_s: float | None) -> float | None:
        """Worst latency / target across the given metrics; None when nothing was measured."""
        ratios = []
        if ttft_s is not None:
            ratios.append(ttft_s / self._ttft_target_s)
        if tpot_s is not None:
            ratios.append(tpot_s / self._tpot_target_s)
        return max(ratios) if ratios else None

    def _clamped(self, size: float) -> float:
        return min(float(self._cap), max(1.0, size))


class FixedRatioController(WindowController):
    """Baseline: multiply by `increase` below 0.8 x target, by `decrease` above target."""

    def __init__(
        self,
        initial: int,
        cap: int,
        ttft_target_s: float,
        tpot_target_s: float,
        *,
        increase: float = 1.5,
        decrease: float = 0.7,
        increase_below: float = 0.8,
    ) -> None:
        super().__init__(initial, cap, ttft_target_s, tpot_target_s)
        self._increase = increase
        self._decrease = decrease
        self._increase_below = increase_below

    def observe(self, ttft_s: float | None, tpot_s: float | None, now: float) -> None:
        ratio = self._latency_ratio(ttft_s, tpot_s)
        if ratio is None:
            return
        if ratio > 1.0:
            self._size = self._clamped(self._size * self._decrease)
        elif ratio < self._increase_below:
            self._size = self._clamped(self._size * self._increase)


class AIMDController(WindowController):
    """Additive increase / multiplicative decrease driven by EWMA TTFT and TPOT.

    +1 after `increase_every` consecutive on-target observations; x`beta` when either EWMA
    is over target, then a `cooldown_s` pause so one burst cannot cut the window twice.
    With `slow_start`, every on-target observation adds 1 until the first cut (TCP's slow
    start: the window doubles per round of completions), so a cold replica reaches its knee
    in seconds instead of minutes.
    """

    def __init__(
        self,
        initial: int,
        cap: int,
        ttft_target_s: float,
        tpot_target_s: float,
        *,
        beta: float = 0.5,
        increase_every: int = 8,
        cooldown_s: float = 2.0,
        ewma_alpha: float = 0.3,
        slow_start: bool = False,
    ) -> None:
        super().__init__(initial, cap, ttft_target_s, tpot_target_s)
        if not 0 < beta < 1:
            raise ValueError(f"beta must be in (0, 1), got {beta}")
        if increase_every < 1:
            raise ValueError(f"increase_every must be >= 1, got {increase_every}")
        if not 0 < ewma_alpha <= 1:
            raise ValueError(f"ewma_alpha must be in (0, 1], got {ewma_alpha}")
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must be >= 0, got {cooldown_s}")
        self._beta = beta
        self._increase_every = increase_every
        self._cooldown_s = cooldown_s
        self._alpha = ewma_alpha
        self._ttft_ewma_s: float | None = None
        self._tpot_ewma_s: float | None = None
        self._on_target_streak = 0
        self._cooldown_until_s = -math.inf
        self._in_slow_start = slow_start

    def observe(self, ttft_s: float | None, tpot_s: float | None, now: float) -> None:
        self._ttft_ewma_s = self._ewma(self._ttft_ewma_s, ttft_s)
        self._tpot_ewma_s = self._ewma(self._tpot_ewma_s, tpot_s)
        if ttft_s is None and tpot_s is None:
            return  # nothing new measured: must not count towards an increase
        # Samples during cooldown mostly reflect requests started under the old, larger window.
        if now < self._cooldown_until_s:
            return
        ratio = self._latency_ratio(self._ttft_ewma_s, self._tpot_ewma_s)
        if ratio is None:
            return
        if ratio > 1.0:
            self._size = self._clamped(self._size * self._beta)
            self._cooldown_until_s = now + self._cooldown_s
            self._on_target_streak = 0
            self._in_slow_start = False
            return
        self._on_target_streak += 1
        if self._in_slow_start or self._on_target_streak >= self._increase_every:
            self._size = self._clamped(self._size + 1.0)
            self._on_target_streak = 0

    def _ewma(self, mean: float | None, sample: float | None) -> float | None:
        if sample is None:
            return mean
        return sample if mean is None else mean + self._alpha * (sample - mean)


WINDOW_CONTROLLERS: dict[str, Callable[..., WindowController]] = {
    "fixed_ratio": FixedRatioController,
    "aimd": AIMDController,
}


def create_window_controller(
    name: str,
    initial: int,
    cap: int,
    ttft_target_s: float,
    tpot_target_s: float,
    **tuning: Any,
) -> WindowController:
    """Build a controller by config name; `tuning` passes controller-specific knobs."""
    controller_type = WINDOW_CONTROLLERS.get(name)
    if controller_type is None:
        raise ValueError(f"unknown window controller {name!r}; known: {', '.join(WINDOW_CONTROLLERS)}")
    return controller_type(initial, cap, ttft_target_s, tpot_target_s, **tuning)


def reserved_headroom(class_rank: int, window: int, fraction: float = 0.1) -> int:
    """Extra in-flight slots above the window that only rank-0 requests may use.

    Lets the most urgent class start at once on a full replica; ceil(10%) (min 1) is small
    enough that the window's latency protection still holds. Other ranks get none, and none
    is reserved at fraction 0.
    """
    if class_rank != 0 or fraction <= 0:
        return 0
    return max(1, math.ceil(window * fraction))
