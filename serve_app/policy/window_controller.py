"""Adaptive batching: how many requests the router lets one replica run at once.

The window grows while latency meets its targets and shrinks when it does not, so the
replica runs near its throughput knee without blowing TTFT/TPOT SLOs.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import Counter
from typing import Annotated, Any, Literal, NamedTuple, Union

from pydantic import Field, TypeAdapter

from serve_app.strict_model import StrictModel


class WindowController(ABC):
    """In-flight window for one replica, always an integer within [1, cap].

    Two limits meet here: the latency-driven size this controller moves, and the cap the controller
    deployment sets from the replica's KV cache. The window is the smaller; a lower cap does not erase
    the size, so when the cap comes back the window returns to what latency last allowed. On the
    calibrated simulator a burst filled the KV cache, the cap fell from 930 to 245 and recovered within
    40 s, and a window clamped to it stayed at ~245 while requests queued at the router."""

    def __init__(self, initial: int, cap: int, ttft_target_s: float, tpot_target_s: float) -> None:
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        self._cap = cap
        self._highest_cap = cap
        self._tpot_setpoint = 1.0  # the share of the TPOT target the latency signal is held under
        self.set_targets(ttft_target_s, tpot_target_s)
        # Kept fractional so repeated small factors (x1.5 from 1) can still move the window.
        self._size = self._clamped(float(initial))
        self._last_cut_s = -math.inf
        # Why the window moved, counted: a run's timeline then says which rule held it where it was.
        self._moves: Counter[str] = Counter()

    @property
    def window(self) -> int:
        return int(min(self._size, self._cap))

    @property
    def cap(self) -> int:
        return self._cap

    def state(self) -> dict[str, Any]:
        """What moved the window so far (`moves`: cuts and growths counted by the rule that made them)."""
        return {"moves": dict(self._moves)}

    def set_cap(self, cap: int) -> None:
        """Change the upper bound (e.g. the KV cache's figure); the window is at most it from now on."""
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        self._cap = cap
        self._highest_cap = max(self._highest_cap, cap)

    def set_targets(self, ttft_target_s: float, tpot_target_s: float) -> None:
        """Follow the tightest SLO among the classes currently active on the replica."""
        if not (ttft_target_s > 0 and tpot_target_s > 0):
            raise ValueError(f"latency targets must be > 0, got ttft={ttft_target_s} tpot={tpot_target_s}")
        self._ttft_target_s = ttft_target_s
        self._tpot_target_s = tpot_target_s

    @abstractmethod
    def observe(self, ttft_s: float | None, tpot_s: float | None, now: float,
                started_s: float | None = None, demand_waiting: bool = False,
                engine_tpot_s: float | None = None) -> None:
        """Feed one request's latencies (None when not measured) observed at `now`, of a request
        dispatched at `started_s` (None: unknown, taken as current); `demand_waiting`: requests wait at
        the router for a slot, so the window, not the traffic, is what limits the replica;
        `engine_tpot_s`: the engine's recent inter-token time as the request ended (None: unknown)."""

    def _from_before_the_last_cut(self, started_s: float | None) -> bool:
        """A request dispatched before the last cut measured the window that was cut, not this one;
        counting it cuts again for the same congestion (TCP cuts once per loss event for the same
        reason). On an H200 under 1,024 clients with ~1,024-token prompts, the engine's running requests
        fell from 314 to 5 within 10 s this way, and +1 per 8 completions then took minutes to come back."""
        return started_s is not None and started_s < self._last_cut_s

    def _cut(self, factor: float, now: float, reason: str) -> None:
        """Cut the window in force (latency measured it, not a size the cap held back)."""
        self._size = self._clamped(min(self._size, self._cap) * factor)
        self._last_cut_s = now
        self._moves[f"cut_{reason}"] += 1

    def _grow_to(self, size: float, reason: str) -> None:
        """Grow, but not past the cap: a size the replica never ran at is not one latency allowed."""
        before = self._size
        self._size = min(self._clamped(size), max(self._size, float(self._cap)))
        if self._size > before:
            self._moves[f"grow_{reason}"] += 1

    def _latency_ratio(self, ttft_s: float | None, tpot_s: float | None) -> float | None:
        """Worst latency / target across the given metrics; None when nothing was measured."""
        ratios = []
        if ttft_s is not None:
            ratios.append(ttft_s / self._ttft_target_s)
        if tpot_s is not None:
            ratios.append(tpot_s / self._tpot_goal_s)
        return max(ratios) if ratios else None

    @property
    def _tpot_goal_s(self) -> float:
        return self._tpot_target_s * self._tpot_setpoint

    def _clamped(self, size: float) -> float:
        return min(float(self._highest_cap), max(1.0, size))


class FixedRatioTuning(StrictModel):
    """Knobs of `fixed_ratio`."""

    kind: Literal["fixed_ratio"] = Field("fixed_ratio", description="The controller these knobs are for.")
    increase: float = Field(1.5, gt=1, description="Factor on the window when latency is under "
                            "`increase_below` x target.")
    decrease: float = Field(0.7, gt=0, lt=1, description="Factor on the window when latency is over target.")
    increase_below: float = Field(0.8, gt=0, le=1, description="Latency / target under which the window grows.")


class FixedRatioController(WindowController):
    """Baseline: multiply by `increase` below `increase_below` x target, by `decrease` above target."""

    def __init__(self, initial: int, cap: int, ttft_target_s: float, tpot_target_s: float,
                 tuning: FixedRatioTuning = FixedRatioTuning()) -> None:
        super().__init__(initial, cap, ttft_target_s, tpot_target_s)
        self._tuning = tuning

    def observe(self, ttft_s: float | None, tpot_s: float | None, now: float,
                started_s: float | None = None, demand_waiting: bool = False,
                engine_tpot_s: float | None = None) -> None:
        ratio = self._latency_ratio(ttft_s, tpot_s)
        if ratio is None or self._from_before_the_last_cut(started_s):
            return
        if ratio > 1.0:
            self._cut(self._tuning.decrease, now, "latency")
        elif ratio < self._tuning.increase_below:
            self._grow_to(self._size * self._tuning.increase, "under_target")


class AIMDTuning(StrictModel):
    """Knobs of `aimd`."""

    kind: Literal["aimd"] = Field("aimd", description="The controller these knobs are for.")
    beta: float = Field(0.8, gt=0, lt=1, description="The deepest cut when the TPOT EWMA is over its set-point "
                        "(the batch itself is too large): the window is scaled by set-point / EWMA, at least by this. "
                        "A cut below what is in flight stops dispatch until enough requests finish, and every "
                        "arrival meanwhile waits: on an H200 (mixed preset, 30 req/s) 0.5 halved the window "
                        "526 -> 263 with one inter-token spike, stopped dispatch ~18 s and met the SLO for 80%; "
                        "0.8 met it for 87% (vLLM's defaults 85%), and for 43% / 37% over 120 s of overload "
                        "against 34% at 0.5 (vLLM's defaults 6.5% / 2.7%).")
    ttft_beta: float = Field(0.9, gt=0, lt=1, description="Factor on the window when only the TTFT EWMA is over "
                             "target (requests wait inside the engine, for KV blocks or the step's token budget).")
    increase_every: int = Field(8, ge=1, description="Consecutive on-target observations per +1 (after slow start).")
    cooldown_s: float = Field(2.0, ge=0, description="No further cut or increase this long after a cut.")
    ewma_alpha: float = Field(0.3, gt=0, le=1, description="Weight of a new sample in the TTFT and TPOT EWMAs.")
    slow_start: bool = Field(True, description="+1 per on-target observation until the first cut, so a cold "
                             "replica reaches its knee in seconds.")
    tpot_setpoint: float = Field(0.8, gt=0, le=1, description="The share of the TPOT target that the window "
                                 "holds the TPOT EWMA under. A request's TPOT varies around the batch's mean "
                                 "(prefills interleave), so a mean held at the target misses it for about half "
                                 "of the requests.")
    tpot_signal: Literal["request", "engine"] = Field("engine", description="The TPOT the window steers by: "
                                                      "`engine`, the engine's mean inter-token time over the last "
                                                      "5 s as a request finished (the batch's current speed; a "
                                                      "request's own TPOT where the replica reports none); "
                                                      "`request`, each finished request's own, the mean over its "
                                                      "life: stale for a long output, noisy for a short one.")
    queued_increase_below: float = Field(0.95, ge=0, le=1, description="While requests wait at the router for "
                                         "a slot, +1 per observation whose EWMAs are under this fraction of their "
                                         "targets (the TPOT target here being already `tpot_setpoint` x the "
                                         "class's; the window doubles per round of completions, as in slow "
                                         "start); 0 turns it off.")


class AIMDController(WindowController):
    """Additive increase / multiplicative decrease driven by EWMA TTFT and TPOT.

    +1 after `increase_every` consecutive on-target observations; a cut when either EWMA is over
    target (TPOT: over `tpot_setpoint` x target), then a `cooldown_s` pause so one burst cannot cut
    the window twice.
    With `slow_start`, every on-target observation adds 1 until the first cut (TCP's slow
    start: the window doubles per round of completions), so a cold replica reaches its knee
    in seconds instead of minutes.
    """

    def __init__(self, initial: int, cap: int, ttft_target_s: float, tpot_target_s: float,
                 tuning: AIMDTuning = AIMDTuning()) -> None:
        super().__init__(initial, cap, ttft_target_s, tpot_target_s)
        self._tuning = tuning
        self._tpot_setpoint = tuning.tpot_setpoint
        self._ttft_ewma_s: float | None = None
        self._tpot_ewma_s: float | None = None
        self._tpot_samples: Counter[str] = Counter()  # TPOT samples taken, by where they came from
        self._on_target_streak = 0
        self._cooldown_until_s = -math.inf
        self._in_slow_start = tuning.slow_start

    def observe(self, ttft_s: float | None, tpot_s: float | None, now: float,
                started_s: float | None = None, demand_waiting: bool = False,
                engine_tpot_s: float | None = None) -> None:
        if tpot_s is not None:
            use_engine = self._tuning.tpot_signal == "engine" and engine_tpot_s is not None
            self._tpot_samples["engine" if use_engine else "request"] += 1
            tpot_s = engine_tpot_s if use_engine else tpot_s
        before_the_cut = self._from_before_the_last_cut(started_s)
        if not before_the_cut:  # the averages restarted at the cut
            self._ttft_ewma_s = self._ewma(self._ttft_ewma_s, ttft_s)
            self._tpot_ewma_s = self._ewma(self._tpot_ewma_s, tpot_s)
        if ttft_s is None and tpot_s is None:
            return  # nothing new measured: must not count towards an increase
        # Samples during cooldown mostly reflect requests started under the old, larger window
        # (the rule for callers that do not say when a request was dispatched).
        if now < self._cooldown_until_s:
            return
        if before_the_cut:
            self._count_from_before_the_cut(ttft_s, tpot_s, demand_waiting)
            return
        ratio = self._latency_ratio(self._ttft_ewma_s, self._tpot_ewma_s)
        if ratio is None:
            return
        if ratio > 1.0:
            self._cut(self._cut_factor(), now, "tpot" if self._tpot_over_setpoint() else "ttft")
            if started_s is not None:  # later samples are all from after the cut: average those alone
                self._ttft_ewma_s = self._tpot_ewma_s = None
            self._cooldown_until_s = now + self._tuning.cooldown_s
            self._on_target_streak = 0
            self._in_slow_start = False
            return
        self._count_on_target(ratio, demand_waiting)

    def state(self) -> dict[str, Any]:
        """The base's `moves`, the latency averages the window is steered by, and whether it is still in
        slow start."""
        return {**super().state(), "ttft_ewma_s": self._ttft_ewma_s, "tpot_ewma_s": self._tpot_ewma_s,
                "tpot_goal_s": self._tpot_goal_s, "tpot_samples": dict(self._tpot_samples),
                "slow_start": self._in_slow_start}

    def _count_on_target(self, ratio: float, demand_waiting: bool) -> None:
        self._on_target_streak += 1
        if self._in_slow_start:
            reason = "slow_start"
        elif self._on_target_streak >= self._tuning.increase_every:
            reason = "on_target"
        elif self._window_holds_back_demand(demand_waiting, ratio):
            reason = "queued"
        else:
            return
        self._grow_to(self._size + 1.0, reason)
        self._on_target_streak = 0

    def _count_from_before_the_cut(self, ttft_s: float | None, tpot_s: float | None, demand_waiting: bool) -> None:
        """A request that ran under the larger window and still met its targets says that window was
        fine: it counts towards growth (never towards a cut). Ignoring it froze the window for a whole
        request's life after every cut, however small: on an H200 (mixed preset, ~17 s per request) a 2%
        trim held the window at ~440 for 17 s while requests queued at the router."""
        ratio = self._latency_ratio(ttft_s, tpot_s)
        if ratio is not None and ratio <= 1.0:
            self._count_on_target(ratio, demand_waiting)

    def _cut_factor(self) -> float:
        """For a slow batch, scale the window by the TPOT set-point / EWMA (a decode step's time grows about in
        proportion to its batch: the cut lands at the knee, not at half of it), by `beta` at least; only trim
        for a long wait to start. A late first token with a fast
        batch means prompts queue inside the engine (for the step's token budget, or for KV blocks), and
        halving the window then halves the batch it runs, and with it the prompts it can take in: on an
        H200 (mixed preset, prefill-bound at 30 req/s, its KV cache at most half used) halving on TTFT
        took our replica from ~540 requests in flight to ~120 within 20 s, and SLO attainment to 53%
        against 85% for `vllm serve` alone. Trimming moves part of the wait to the router, where
        priorities and deadlines apply, and keeps the batch."""
        if self._tpot_over_setpoint():
            return max(self._tuning.beta, self._tpot_goal_s / self._tpot_ewma_s)
        return self._tuning.ttft_beta

    def _tpot_over_setpoint(self) -> bool:
        return self._tpot_ewma_s is not None and self._tpot_ewma_s > self._tpot_goal_s

    def _window_holds_back_demand(self, demand_waiting: bool, ratio: float) -> bool:
        """Requests wait at the router while latency sits well under target: the window is below the
        replica's knee, and +1 per `increase_every` completions is far too slow to find it again. On an
        H200 (mixed preset, 30 req/s, ~17 s per request) a closed-loop burst had cut the window to ~290;
        the open-loop run after it needed ~510 in flight (Little's law) but grew by ~60 in 35 s while up
        to 130 requests queued at the router, and met the SLO for 41% of requests against 85% for `vllm
        serve`, whose TPOT stayed on target at that concurrency. The threshold is a share of the set-point,
        itself the margin for TPOT's spread: at 0.8 (0.64 of the class's TPOT) a later run's window grew
        by ~50 in 16 s while up to 91 requests queued, its TPOT average at ~0.8 of the set-point and the
        requests' TPOT p90 at 55-59 ms against an 80 ms target; 58% met the SLO."""
        return demand_waiting and ratio < self._tuning.queued_increase_below

    def _ewma(self, mean: float | None, sample: float | None) -> float | None:
        if sample is None:
            return mean
        return sample if mean is None else mean + self._tuning.ewma_alpha * (sample - mean)


class WindowControllerChoice(NamedTuple):
    tuning: type[StrictModel]
    controller: type[WindowController]


# The one registry: the config's allowed `window_controller` names and each one's typed tuning come from
# here; adding a controller is adding a (tuning, class) pair whose tuning's `kind` is its name.
WINDOW_CONTROLLERS: dict[str, WindowControllerChoice] = {
    "fixed_ratio": WindowControllerChoice(FixedRatioTuning, FixedRatioController),
    "aimd": WindowControllerChoice(AIMDTuning, AIMDController),
}
DEFAULT_WINDOW_CONTROLLER = "aimd"

# A tuning of any registered controller, told apart by `kind` (the controller's name).
WindowTuning = Annotated[Union[tuple(choice.tuning for choice in WINDOW_CONTROLLERS.values())],  # type: ignore[misc]
                         Field(discriminator="kind")]
_WINDOW_TUNING: TypeAdapter[Any] = TypeAdapter(WindowTuning)


def window_tuning(name: str = DEFAULT_WINDOW_CONTROLLER, **knobs: Any) -> WindowTuning:
    """The validated tuning of controller `name` (defaults for knobs not given); pydantic's
    ValidationError (a ValueError) names a knob the controller does not take or a value out of bounds."""
    if name not in WINDOW_CONTROLLERS:
        raise ValueError(f"unknown window controller {name!r}; known: {', '.join(WINDOW_CONTROLLERS)}")
    return _WINDOW_TUNING.validate_python({**knobs, "kind": name})


def create_window_controller(tuning: WindowTuning, initial: int, cap: int, ttft_target_s: float,
                             tpot_target_s: float) -> WindowController:
    """The controller that `tuning` names (its `kind`), built with it (vLLM's create_request_queue)."""
    return WINDOW_CONTROLLERS[tuning.kind].controller(initial, cap, ttft_target_s, tpot_target_s, tuning)


def reserved_headroom(class_rank: int, window: int, fraction: float = 0.1) -> int:
    """Extra in-flight slots above the window that only rank-0 requests may use.

    Lets the most urgent class start at once on a full replica; ceil(10%) (min 1) is small
    enough that the window's latency protection still holds. Other ranks get none, and none
    is reserved at fraction 0.
    """
    if class_rank != 0 or fraction <= 0:
        return 0
    return max(1, math.ceil(window * fraction))
