"""The LLM autoscaling decision: how many replicas, from what matters for LLM serving.

Ray Serve's default policy divides ongoing requests by `target_ongoing_requests`. Behind our router
that signal is blind: the router holds the global queue and caps each replica's in-flight window,
so a replica's ongoing requests stay at its window while the queue grows. This policy also scales
up when the top priority classes queue in the router, miss their SLO, or the KV cache is nearly
full, and when the router turns load away for lack of capacity (overload, full queue, shed, queue
deadline; not per-caller rate limits): admission control hides that load from every other signal; it scales down one replica at a time, only after every signal has been calm for
`downscale_delay_s`. It does not add replicas while earlier ones are still starting, unless the
load itself asks for more (LLM replicas take minutes to start; pressure lasts until they are up).

Pure: signals, settings and the previous state in; replicas and the next state out; `now` passed in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

from serve_app.autoscaling_config import AutoscalingSettings, LLMPolicyKnobs

_SCALING = AutoscalingSettings.model_fields
_KNOBS = LLMPolicyKnobs.model_fields


@dataclass(frozen=True)
class LLMPolicySettings:
    """The config's `autoscaling:` values the policy reads (`AutoscalingSettings.serve_autoscaling_config`
    passes them); defaults are the config's, stated there once."""

    min_replicas: int = _SCALING["min_replicas"].default
    max_replicas: int = _SCALING["max_replicas"].default
    target_ongoing_requests: float = _SCALING["target_ongoing_requests"].default
    upscale_delay_s: float = _SCALING["upscale_delay_s"].default
    downscale_delay_s: float = _SCALING["downscale_delay_s"].default
    top_classes: Sequence[str] = ()  # the classes whose queueing and SLO misses trigger a scale-up
    queue_depth_per_replica: float = _KNOBS["queue_depth_per_replica"].default
    slo_attainment_min: float = _KNOBS["slo_attainment_min"].default
    slo_min_samples: int = _KNOBS["slo_min_samples"].default
    kv_cache_high: float = _KNOBS["kv_cache_high"].default
    kv_cache_low: float = _KNOBS["kv_cache_low"].default
    refused_share_max: float = 0.01  # share of arrivals refused for capacity: pressure above (as the capacity SLO)
    refusal_scale_max: float = 4.0  # at most this factor on the load per decision when most arrivals are refused
    # Requests/s one replica serves within the SLO, less headroom (the capacity model's figure); 0: unknown.
    # Known, the arrival rate sizes the deployment directly and refusals are only a backstop.
    target_rps_per_replica: float = _SCALING["target_rps_per_replica"].default


@dataclass(frozen=True)
class Signals:
    """What the replicas report, aggregated over Serve's look-back window."""

    running_replicas: int
    target_replicas: int  # Serve's current target (running + starting)
    ongoing_requests: Mapping[str, float]  # per running replica
    kv_cache_usage: Mapping[str, float] = field(default_factory=dict)  # per running replica, 0..1
    queue_depth: Mapping[str, float] = field(default_factory=dict)  # router queue per class
    slo_attainment: Mapping[str, float] = field(default_factory=dict)  # per class, 0..1
    slo_samples: Mapping[str, float] = field(default_factory=dict)  # per class, recent requests judged
    # Router, per class, recent: arrivals past the per-caller rate limit, and those of them refused
    # for capacity (overload, queue full, shed for a higher class, queue deadline expired).
    arrival_rate_rps: Mapping[str, float] = field(default_factory=dict)
    refused_rate_rps: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyState:
    pressure_since: float | None = None
    calm_since: float | None = None
    last_reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {"pressure_since": self.pressure_since, "calm_since": self.calm_since,
                "last_reasons": list(self.last_reasons)}

    @classmethod
    def from_dict(cls, data: Mapping) -> PolicyState:
        return cls(data.get("pressure_since"), data.get("calm_since"), tuple(data.get("last_reasons", ())))


def refused_share(signals: Signals, class_name: str | None = None) -> float:
    """Share of recent arrivals (of one class, or all) the router refused for capacity; 0 with none."""
    names = [class_name] if class_name else set(signals.arrival_rate_rps) | set(signals.refused_rate_rps)
    refused = sum(signals.refused_rate_rps.get(name, 0.0) for name in names)
    arrived = sum(signals.arrival_rate_rps.get(name, 0.0) for name in names)
    if refused <= 0:
        return 0.0
    # Expiries lag their arrivals, so refused can exceed arrived right after a load drop.
    return 1.0 if arrived <= 0 else min(1.0, refused / arrived)


def arrival_replicas(signals: Signals, settings: LLMPolicySettings) -> int | None:
    """Replicas the router's arrival rate needs at `target_rps_per_replica`; None when that is unknown."""
    if settings.target_rps_per_replica <= 0 or not signals.arrival_rate_rps:
        return None
    return math.ceil(sum(signals.arrival_rate_rps.values()) / settings.target_rps_per_replica - 1e-9)


def ongoing_replicas(signals: Signals, settings: LLMPolicySettings) -> int:
    """Replicas for the ongoing plus top-class queued requests at `target_ongoing_requests` each."""
    queued_top = sum(signals.queue_depth.get(name, 0.0) for name in settings.top_classes)
    total = sum(signals.ongoing_requests.values()) + queued_top
    return math.ceil(total / settings.target_ongoing_requests - 1e-9)


def load_replicas(signals: Signals, settings: LLMPolicySettings) -> int:
    """Replicas the load alone needs: ongoing plus top-class queued requests over the target per replica.

    Admission control keeps ongoing requests and the queue at their caps, where they no longer grow
    with the load, so the load the router turns away has to be counted too. With the capacity
    model's `target_rps_per_replica`, from the arrival rate alone: it falls as soon as the load does,
    and in-flight and queued requests beyond it are a backlog that drains or expires long before a
    new replica could start, so they add replicas only one at a time (`pressure_reasons`). Counting
    them in full while the arrivals rose sized by the routers' windows instead of the load: with
    ~240 requests in flight per replica at the peak (a window full to the replica's SLO concurrency)
    over `target_ongoing_requests` 72.66, the simulated 100 -> 3000 -> 100 req/s ramp ran to the
    200-replica cap where the arrivals asked for 127, and the 73 more came up after the peak: 30.1
    replica-hours against 20.9, the same requests within their SLO. Without `target_rps_per_replica`,
    from the refused share:
    when the router refuses more than `refused_share_max` of the arrivals for capacity, the running
    replicas serve only the admitted share, so the demand needs running / admitted share replicas (at
    most `refusal_scale_max` x running per decision). That share lags a load drop (requests queued at
    the peak expire after it), which overshoots after a peak.
    """
    by_arrivals = arrival_replicas(signals, settings)
    if by_arrivals is not None:
        return by_arrivals
    by_ongoing = ongoing_replicas(signals, settings)
    share = refused_share(signals)
    if share <= settings.refused_share_max:
        return by_ongoing
    factor = min(settings.refusal_scale_max, 1.0 / max(1e-9, 1.0 - share))
    return max(by_ongoing, math.ceil(max(1, signals.running_replicas) * factor - 1e-9))


def pressure_reasons(signals: Signals, settings: LLMPolicySettings) -> list[str]:
    """Why more replicas are needed even if ongoing requests look fine (empty: no pressure)."""
    reasons = []
    replicas = max(1, signals.running_replicas)
    for name in settings.top_classes:
        queued = signals.queue_depth.get(name, 0.0)
        if queued / replicas > settings.queue_depth_per_replica:
            reasons.append(f"{name}: {queued:.1f} queued in the router ({queued / replicas:.2f} per replica)")
        samples = signals.slo_samples.get(name, 0.0)
        attained = signals.slo_attainment.get(name)
        if attained is not None and samples >= settings.slo_min_samples and attained < settings.slo_attainment_min:
            reasons.append(f"{name}: {100 * attained:.0f}% of {samples:.0f} recent requests met the SLO")
    by_arrivals = arrival_replicas(signals, settings)
    # With the arrival rate known, refusals while it asks for fewer replicas than there are come from
    # a load that has already passed (expiries lag their arrivals): no reason to add more.
    refusals_count = by_arrivals is None or by_arrivals >= signals.target_replicas
    if by_arrivals is not None:
        # In-flight requests beyond the replicas there are may mean the capacity model overstated a
        # replica (longer outputs than in the load test), or a backlog: one more at a time.
        by_ongoing = ongoing_replicas(signals, settings)
        if by_ongoing > signals.target_replicas:
            reasons.append(f"in-flight requests need {by_ongoing} replicas (arrivals: {by_arrivals})")
    for name in sorted(signals.refused_rate_rps) if refusals_count else ():
        share = refused_share(signals, name)
        if share > settings.refused_share_max:
            reasons.append(f"{name}: {100 * share:.0f}% of arrivals refused or shed for capacity "
                           f"({signals.refused_rate_rps[name]:.1f}/s)")
    kv = _mean(signals.kv_cache_usage.values())
    if kv is not None and kv > settings.kv_cache_high:
        reasons.append(f"KV cache {100 * kv:.0f}% used on average")
    return reasons


def is_calm(signals: Signals, settings: LLMPolicySettings) -> bool:
    """Nothing queued in the top classes, SLOs met, KV cache well below its high mark."""
    if any(signals.queue_depth.get(name, 0.0) > 0 for name in settings.top_classes):
        return False
    if pressure_reasons(signals, settings):
        return False
    kv = _mean(signals.kv_cache_usage.values())
    return kv is None or kv < settings.kv_cache_low


def decide_replicas(signals: Signals, settings: LLMPolicySettings, state: PolicyState,
                    now: float) -> tuple[int, PolicyState]:
    """Target replica count and the next state; within [min_replicas, max_replicas]."""
    current = signals.target_replicas
    by_load = load_replicas(signals, settings)
    reasons = pressure_reasons(signals, settings)
    starting = signals.target_replicas > signals.running_replicas
    desired = by_load
    if reasons and not starting:
        desired = max(desired, current + 1)
    if desired > current:
        since = state.pressure_since if state.pressure_since is not None else now
        decision = desired if now - since >= settings.upscale_delay_s - 1e-9 else current
        next_state = PolicyState(pressure_since=None if decision > current else since, calm_since=None,
                                 last_reasons=tuple(reasons) or (f"load needs {by_load} replicas",))
        return _bounded(decision, settings), next_state
    if by_load < current and is_calm(signals, settings):
        since = state.calm_since if state.calm_since is not None else now
        if now - since >= settings.downscale_delay_s - 1e-9:
            # One replica at a time; the calm clock restarts so the next step waits a full delay.
            return _bounded(current - 1, settings), PolicyState(last_reasons=("calm: one replica less",))
        return _bounded(current, settings), replace(state, pressure_since=None, calm_since=since)
    return _bounded(current, settings), PolicyState(last_reasons=tuple(reasons))


def _bounded(replicas: int, settings: LLMPolicySettings) -> int:
    return max(settings.min_replicas, min(settings.max_replicas, replicas))


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None
