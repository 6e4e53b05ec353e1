"""Capacity model: a rate sweep -> the highest rate one replica sustains within the SLO -> Serve autoscaling.

Pure: sweep JSON (`{"kind": "rate_sweep", "runs": [LoadTestResult, ...]}`, the load driver's schema) in,
dataclasses out. No Ray, no clocks.

Conservative on purpose, everywhere a choice exists:
- capacity lies below the *first* failing rate, even if a higher rate happens to pass again (noise);
- between the last passing and the first failing rate, each failing metric (p99 TTFT / SLO, ...) is
  interpolated linearly. Latency grows convexly with load, so the chord lies above the curve and
  crosses the SLO at or before the true crossing: the estimate errs low.
- in-flight at that rate is the passing run's in-flight scaled by rate (Little's law with the passing
  run's latency). True latency at a higher rate is no lower, so this errs low too, and a lower
  `target_ongoing_requests` scales out earlier.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

from serve_app.autoscaling_config import DOWNSCALE_DELAY_S, AutoscalingSettings

Percentile = Literal["mean", "p50", "p90", "p99"]  # serve_app.statistics.SUMMARY_KEYS (a test holds them equal)


class CapacityError(ValueError):
    """The sweep cannot give a capacity (malformed, or no rate meets the SLO); the message says why."""


@dataclass(frozen=True)
class SloChoice:
    """What "within the SLO" means for the sweep: one class (or overall) at a latency percentile."""

    slo_class: str | None = None  # None: the `overall` stats
    ttft_slo_s: float | None = None  # None: the class's own SLO as the run recorded it
    tpot_slo_s: float | None = None
    percentile: Percentile = "p99"
    max_unserved_share: float = 0.01  # refused (429/503) + failed, as a share of sent
    # A run kept up when its responses ended within this many light-load e2e p99s after the last
    # arrival; beyond that a backlog built up (lower classes queue although the SLO class looks fine).
    max_drain_factor: float = 2.0


@dataclass(frozen=True)
class SweepPoint:
    """One run of the sweep, judged against the SLO. `margins`: metric / limit, <= 1 passes."""

    index: int
    rate_rps: float
    mean_in_flight: float
    throughput_rps: float
    mean_e2e_s: float | None
    margins: Mapping[str, float]  # "ttft", "tpot", "unserved"; inf when a limited metric has no samples

    @property
    def meets_slo(self) -> bool:
        return all(m <= 1.0 for m in self.margins.values())


@dataclass(frozen=True)
class CapacityEstimate:
    """Sustainable request rate and in-flight requests per replica, and where they came from."""

    max_rate_rps: float
    mean_in_flight: float
    littles_law_in_flight: float  # throughput x mean e2e latency of the source run, per replica
    source_run: int  # index in the sweep of the last passing run
    source_rate_rps: float
    interpolated_toward_run: int | None  # the first failing run, when the estimate lies between the two
    bounded_by_sweep: bool  # every run passed: the real capacity may be higher
    mean_e2e_s: float | None
    slo: SloChoice
    points: tuple[SweepPoint, ...] = field(repr=False)
    notes: tuple[str, ...] = ()

    @property
    def littles_law_gap(self) -> float:
        """Relative gap between measured and Little's-law in-flight at the source run (0 = agree)."""
        source = self.points[self.source_run]
        if source.mean_in_flight <= 0:
            return 0.0
        return abs(self.littles_law_in_flight - source.mean_in_flight) / source.mean_in_flight


def _stats(run: Mapping[str, Any], slo_class: str | None) -> Mapping[str, Any]:
    if slo_class is None:
        return run["overall"]
    classes = run.get("classes") or {}
    if slo_class not in classes:
        raise CapacityError(f"run {run.get('command', '?')!r} has no class {slo_class!r}; it has {sorted(classes)}")
    return classes[slo_class]


def _limit(explicit: float | None, stats: Mapping[str, Any], key: str) -> float | None:
    if explicit is not None:
        return explicit
    return (stats.get("slo") or {}).get(key)


def drain_s(run: Mapping[str, Any]) -> float | None:
    """Seconds from the end of the arrivals to the last response (None when the run does not say)."""
    window = (run.get("workload") or {}).get("duration_s")
    if window is None or run.get("duration_s") is None:
        return None
    return max(0.0, run["duration_s"] - window)


def light_load_e2e_s(runs: Sequence[Mapping[str, Any]]) -> float | None:
    """e2e p99 of the lowest-rate run: how long the service takes to finish a request unloaded."""
    lightest = min(runs, key=lambda run: run.get("offered_rate_rps", math.inf))
    return ((lightest.get("overall") or {}).get("e2e_s") or {}).get("p99")


def judge_run(index: int, run: Mapping[str, Any], slo: SloChoice, replicas_in_sweep: int = 1,
              drain_limit_s: float | None = None) -> SweepPoint:
    """One run's SLO margins and its per-replica rate and in-flight."""
    try:
        stats = _stats(run, slo.slo_class)
        sent = stats["sent"]
        unserved = stats["refused_429"] + stats["refused_503"] + stats["failed"]
        margins: dict[str, float] = {}
        for name, key in (("ttft", "ttft_s"), ("tpot", "tpot_s")):
            limit = _limit(slo.ttft_slo_s if name == "ttft" else slo.tpot_slo_s, stats, key)
            if limit is None:
                continue
            value = stats[key][slo.percentile]
            margins[name] = math.inf if value is None else value / limit
        if not margins:
            raise CapacityError(f"no latency limit for {slo.slo_class or 'overall'}: the runs record none; "
                                "give ttft_slo_s / tpot_slo_s")
        share = unserved / sent if sent else 1.0
        margins["unserved"] = share / slo.max_unserved_share if slo.max_unserved_share > 0 else (
            math.inf if share > 0 else 0.0)
        drained = drain_s(run)
        if drain_limit_s and drained is not None:
            margins["backlog"] = drained / drain_limit_s
        overall = run["overall"]
        return SweepPoint(index=index, rate_rps=run["offered_rate_rps"] / replicas_in_sweep,
                          mean_in_flight=run["mean_in_flight"] / replicas_in_sweep,
                          throughput_rps=overall["request_throughput_rps"] / replicas_in_sweep,
                          mean_e2e_s=overall["e2e_s"]["mean"], margins=margins)
    except (KeyError, TypeError) as error:
        raise CapacityError(f"sweep run {index} does not follow the load-test schema: missing {error}") from None


def _crossing(rate_a: float, margin_a: float, rate_b: float, margin_b: float) -> float:
    """Rate where the chord from (a, margin_a <= 1) to (b, margin_b > 1) reaches 1."""
    if not math.isfinite(margin_b) or margin_b <= margin_a:
        return rate_a
    return rate_a + (1.0 - margin_a) * (rate_b - rate_a) / (margin_b - margin_a)


def estimate_capacity(sweep: Mapping[str, Any], slo: SloChoice, replicas_in_sweep: int = 1) -> CapacityEstimate:
    """The highest per-replica rate within `slo`, from a rate sweep against `replicas_in_sweep` replicas."""
    if sweep.get("kind") != "rate_sweep" or not isinstance(sweep.get("runs"), list) or not sweep["runs"]:
        raise CapacityError("expected a rate sweep: {\"kind\": \"rate_sweep\", \"runs\": [at least one run]}")
    if replicas_in_sweep < 1:
        raise CapacityError(f"replicas_in_sweep must be >= 1, got {replicas_in_sweep}")
    light_e2e = light_load_e2e_s(sweep["runs"])
    drain_limit = slo.max_drain_factor * light_e2e if light_e2e else None
    points = tuple(judge_run(i, run, slo, replicas_in_sweep, drain_limit) for i, run in enumerate(sweep["runs"]))
    ordered = sorted(points, key=lambda p: p.rate_rps)
    first_fail = next((k for k, p in enumerate(ordered) if not p.meets_slo), None)
    if first_fail == 0:
        worst = max(ordered[0].margins, key=lambda m: ordered[0].margins[m])
        raise CapacityError(f"even the lowest rate ({ordered[0].rate_rps:.3g} req/s per replica) misses the SLO "
                            f"({worst} at {ordered[0].margins[worst]:.2f}x its limit); sweep lower rates")
    notes: list[str] = []
    if first_fail is None:
        passing, failing = ordered[-1], None
        rate = passing.rate_rps
        notes.append("every run met the SLO: capacity is at least the highest rate swept")
    else:
        passing, failing = ordered[first_fail - 1], ordered[first_fail]
        later_passes = [p.rate_rps for p in ordered[first_fail + 1:] if p.meets_slo]
        if later_passes:
            notes.append(f"runs at {later_passes} req/s passed again above a failing one; ignored (noise)")
        crossings = [_crossing(passing.rate_rps, passing.margins[m], failing.rate_rps, failing.margins[m])
                     for m, v in failing.margins.items() if v > 1.0 and m in passing.margins]
        rate = min(crossings) if crossings else passing.rate_rps
    in_flight = passing.mean_in_flight * (rate / passing.rate_rps) if passing.rate_rps > 0 else 0.0
    littles = passing.throughput_rps * (passing.mean_e2e_s or 0.0)
    estimate = CapacityEstimate(
        max_rate_rps=rate, mean_in_flight=in_flight, littles_law_in_flight=littles, source_run=passing.index,
        source_rate_rps=passing.rate_rps, interpolated_toward_run=failing.index if failing and rate > passing.rate_rps
        else None, bounded_by_sweep=failing is None, mean_e2e_s=passing.mean_e2e_s, slo=slo, points=points,
        notes=tuple(notes))
    if estimate.littles_law_gap > 0.25:
        notes.append(f"measured in-flight ({passing.mean_in_flight:.2f}) and Little's law "
                     f"({littles:.2f}) differ by {100 * estimate.littles_law_gap:.0f}%: the run may not have "
                     "reached steady state")
        estimate = CapacityEstimate(**{**estimate.__dict__, "notes": tuple(notes)})
    return estimate


# ---------------------------------------------------------------- autoscaling_config from a capacity

@dataclass(frozen=True)
class DerivedAutoscaling:
    """The `autoscaling:` settings a capacity implies, with the reasoning for each value."""

    min_replicas: int
    max_replicas: int
    target_ongoing_requests: float
    target_rps_per_replica: float
    upscale_delay_s: float
    downscale_delay_s: float
    upscale_smoothing_factor: float
    downscale_smoothing_factor: float
    look_back_period_s: float
    reasons: tuple[str, ...]

    def settings(self) -> dict[str, Any]:
        """The values as the config's `autoscaling:` section names them (without `enabled`/`policy`)."""
        return {key: value for key, value in self.__dict__.items() if key != "reasons"}


# A replica's start as Serve sees it (added -> ready), with the compile caches on the workers' shared
# volume (engine.compile_cache_dir, as the manifests mount it): the slowest warm start measured on an H200,
# benchmarks/results/autoscaling_h200/summary.json (a test holds them equal; the engine process forked from
# the replica's fork server). With an empty cache the same replica took 167 s.
MEASURED_REPLICA_START_S = 40.1


def derive_autoscaling(estimate: CapacityEstimate, peak_rate_rps: float, min_replicas: int = 1,
                       headroom: float = 0.2, *, replica_start_s: float = MEASURED_REPLICA_START_S,
                       upscale_delay_s: float | None = None, downscale_delay_s: float | None = None,
                       look_back_period_s: float | None = None) -> DerivedAutoscaling:
    """Serve autoscaling values for a peak load, keeping `headroom` of each replica's capacity free.

    LLM replicas take minutes to start (weights, compile, CUDA graphs; `replica_start_s`), so: scale up
    fast (short delay, full step: a half step costs another start later) and down slowly (a replica
    removed by a lull costs `replica_start_s` of SLO misses to bring back, and its drain takes time).
    """
    if not 0 <= headroom < 1:
        raise CapacityError(f"headroom must be in [0, 1), got {headroom}")
    if peak_rate_rps <= 0 or min_replicas < 0:
        raise CapacityError(f"peak_rate_rps must be > 0 and min_replicas >= 0, got {peak_rate_rps}, {min_replicas}")
    usable_rate = estimate.max_rate_rps * (1 - headroom)
    if usable_rate <= 0:
        raise CapacityError("the capacity estimate is zero requests per second")
    needed = math.ceil(peak_rate_rps / usable_rate - 1e-9)
    max_replicas = max(needed, min_replicas, 1)
    target = max(0.1, round(estimate.mean_in_flight * (1 - headroom), 2))
    target_rps = round(usable_rate, 2)
    mean_e2e = estimate.mean_e2e_s or 0.0
    up = upscale_delay_s if upscale_delay_s is not None else AutoscalingSettings.model_fields["upscale_delay_s"].default
    down = downscale_delay_s if downscale_delay_s is not None else max(DOWNSCALE_DELAY_S, 3 * replica_start_s)
    look_back = look_back_period_s if look_back_period_s is not None else max(30.0, round(3 * mean_e2e, 1))
    reasons = (
        f"capacity {estimate.max_rate_rps:.3g} req/s per replica within the SLO ({_slo_text(estimate.slo)}), "
        f"{estimate.mean_in_flight:.3g} requests in flight there (run {estimate.source_run}"
        + (f", interpolated toward run {estimate.interpolated_toward_run}" if estimate.interpolated_toward_run
           is not None else "") + ")",
        f"target_ongoing_requests = {estimate.mean_in_flight:.3g} x (1 - headroom {headroom:g}) = {target:g}",
        f"target_rps_per_replica = {estimate.max_rate_rps:.3g} x (1 - headroom {headroom:g}) = {target_rps:g} "
        "(the llm policy sizes from the router's arrival rate with it)",
        f"max_replicas = ceil(peak {peak_rate_rps:g} / ({estimate.max_rate_rps:.3g} x {1 - headroom:g})) = {needed}"
        + (f", raised to min_replicas {min_replicas}" if max_replicas > needed else ""),
        f"upscale_delay_s = {up:g}: a replica needs ~{replica_start_s:g}s to start; waiting longer only adds "
        "to that. upscale smoothing 1.0: go straight to the count the load needs",
        f"downscale_delay_s = {down:g} (the default {DOWNSCALE_DELAY_S:g}, or 3 x start time if longer): a lull "
        "shorter than that is cheaper to ride out "
        "than a replica restart; downscale smoothing 0.5: shed half the surplus per decision",
        f"look_back_period_s = {look_back:g}: several request lifetimes (mean e2e {mean_e2e:.3g}s) so the "
        "in-flight average is not one request's noise",
    ) + estimate.notes
    return DerivedAutoscaling(min_replicas=min_replicas, max_replicas=max_replicas, target_ongoing_requests=target,
                              target_rps_per_replica=target_rps,
                              upscale_delay_s=up, downscale_delay_s=down, upscale_smoothing_factor=1.0,
                              downscale_smoothing_factor=0.5, look_back_period_s=look_back, reasons=reasons)


def _slo_text(slo: SloChoice) -> str:
    who = slo.slo_class or "overall"
    limits = [f"{slo.percentile} TTFT <= {slo.ttft_slo_s:g}s" if slo.ttft_slo_s else f"{slo.percentile} TTFT",
              f"{slo.percentile} TPOT <= {slo.tpot_slo_s:g}s" if slo.tpot_slo_s else f"{slo.percentile} TPOT"]
    return f"{who}: {', '.join(limits)}, unserved <= {100 * slo.max_unserved_share:g}%"


def sweep_table(points: Sequence[SweepPoint]) -> list[dict[str, Any]]:
    """The judged runs as a table (for printing)."""
    return [{"run": p.index, "rate_rps": round(p.rate_rps, 4), "in_flight": round(p.mean_in_flight, 3),
             "meets_slo": p.meets_slo, **{f"{k}_margin": round(v, 3) for k, v in p.margins.items()}}
            for p in points]
