"""Issue 20's GPU ramp, judged: per-request outcomes and replica timelines (measured or simulated) ->
per-phase and per-class goodput and SLO attainment, replica-seconds, replica start times, the
throughput of one vs two replicas, the simulator's error against a measured run, and the goals.

Pure. A request is *served* when it got a 200 with every token it asked for, *refused* on a clean
429/503, and *lost* otherwise (as `autoscaling.ramp` classifies them). A replica timeline is a list of
`(t_s, running, total)` samples: RUNNING replicas and all of them (starting and stopping included).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from autoscaling.bench.vs_vllm_goals import goal
from autoscaling.loadtest.metrics import RequestRecord, Slo
from serve_app.statistics import attainment, meets_slo

Kind = Literal["served", "refused", "lost"]
Sample = tuple[float, int, int]
QueueSample = tuple[float, int]  # (t_s, requests queued at the router)
Window = tuple[float, float]
# Goals (issue 20).
INTERACTIVE_GOODPUT_GOAL = 1.2
TWO_REPLICA_SCALING_GOAL = 1.9
SIMULATOR_TOLERANCE = 0.10


@dataclass(frozen=True)
class RampRequest:
    """One request's outcome; times in seconds from the ramp's start."""

    index: int
    class_name: str
    sent_s: float
    end_s: float
    kind: Kind
    ttft_s: float | None = None
    tpot_s: float | None = None
    output_tokens: int = 0
    status: int | None = None
    detail: str | None = None

    def met(self, slo: Slo) -> bool:
        return self.kind == "served" and meets_slo(self.ttft_s, self.tpot_s, slo.ttft_s, slo.tpot_s)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RampRequest:
        return cls(**data)


def from_record(record: RequestRecord, max_tokens: int) -> RampRequest:
    """The load driver's record of a request that asked for `max_tokens` (with `ignore_eos`)."""
    if record.outcome == "completed" and record.output_tokens == max_tokens:
        kind: Kind = "served"
        detail = None
    elif record.outcome == "refused":
        kind, detail = "refused", record.error_code
    else:
        kind = "lost"
        detail = record.error_code or (f"{record.output_tokens} of {max_tokens} tokens" if record.outcome == "completed"
                                       else record.error)
    return RampRequest(record.index, record.class_name, record.send_s, record.end_s, kind, record.ttft_s,
                       record.tpot_s, record.output_tokens or 0, record.status, detail)


# ---- requests -> figures ------------------------------------------------------------------------------
def window_stats(requests: Sequence[RampRequest], slos: Mapping[str, Slo], window: Window) -> dict[str, Any]:
    """Per class (and `all`) for the requests *sent* in [start, end): counts, goodput (SLO met per second
    of the window), attainment (met / sent: a refused or lost request missed), output tok/s emitted in it."""
    start, end = window
    length = end - start
    sent = [r for r in requests if start <= r.sent_s < end]
    names = list(dict.fromkeys([*slos, *(r.class_name for r in sent)]))
    out: dict[str, Any] = {}
    for name, rows in [*((n, [r for r in sent if r.class_name == n]) for n in names), ("all", sent)]:
        met = [r.met(slos.get(r.class_name, Slo())) for r in rows]
        out[name] = {"sent": len(rows), "served": sum(r.kind == "served" for r in rows),
                     "refused": sum(r.kind == "refused" for r in rows), "lost": sum(r.kind == "lost" for r in rows),
                     "met_slo": sum(met), "goodput_rps": sum(met) / length if length > 0 else 0.0,
                     "slo_attainment": attainment(met),
                     "output_tok_s": output_tokens_in([r for r in requests if name in ("all", r.class_name)],
                                                      window) / length if length > 0 else 0.0}
    return out


def phase_stats(requests: Sequence[RampRequest], slos: Mapping[str, Slo],
                phases: Sequence[tuple[str, float, float]]) -> dict[str, Any]:
    """`window_stats` per phase and over the whole schedule (`run`)."""
    out = {name: window_stats(requests, slos, (start, end)) for name, start, end in phases}
    out["run"] = window_stats(requests, slos, (phases[0][1], phases[-1][2]))
    return out


def output_tokens_in(requests: Sequence[RampRequest], window: Window) -> float:
    """Output tokens emitted in the window by served requests, each spread evenly from its first token to
    its end (per-token times are not kept)."""
    start, end = window
    total = 0.0
    for r in requests:
        if r.kind != "served" or r.ttft_s is None or not r.output_tokens:
            continue
        first = r.sent_s + r.ttft_s
        if r.end_s <= first:
            total += r.output_tokens if start <= first < end else 0
            continue
        overlap = max(0.0, min(end, r.end_s) - max(start, first))
        total += r.output_tokens * overlap / (r.end_s - first)
    return total


def goodput_series(requests: Sequence[RampRequest], slos: Mapping[str, Slo], window_s: float,
                   end_s: float) -> dict[str, list[float]]:
    """Per class, goodput (requests/s meeting the SLO, by send time) in consecutive windows, for plots."""
    n = max(1, int(end_s // window_s))
    out = {name: [0.0] * n for name in slos}
    for r in requests:
        i = int(r.sent_s // window_s)
        if 0 <= i < n and r.class_name in out and r.met(slos[r.class_name]):
            out[r.class_name][i] += 1 / window_s
    return out


# ---- replica timelines -------------------------------------------------------------------------------
def running_at(samples: Sequence[Sample], t: float) -> int:
    """RUNNING replicas of the last sample at or before `t` (the first sample's before it)."""
    value = samples[0][1] if samples else 0
    for s in samples:
        if s[0] > t:
            break
        value = s[1]
    return value


def replica_seconds(samples: Sequence[Sample], end_s: float, column: int = 1) -> float:
    """Integral of a timeline column (1: running, 2: all replicas, what the GPUs were held for) up to `end_s`."""
    total = 0.0
    for a, b in zip(samples, [*samples[1:], (end_s, 0, 0)]):
        total += max(0.0, min(b[0], end_s) - a[0]) * a[column]
    return total


def replica_starts(samples: Sequence[Sample]) -> list[dict[str, float]]:
    """Each replica added: when the timeline first showed it (`total` rose past the running count) and
    when it ran; one withdrawn before it ran is not a start."""
    pending: dict[int, float] = {}
    starts = []
    for t, running, total in samples:
        for level in range(running + 1, total + 1):
            pending.setdefault(level, t)
        for level in [level for level in pending if level <= running]:
            starts.append({"replicas": level, "requested_s": pending[level], "running_s": t,
                           "start_s": t - pending.pop(level)})
        for level in [level for level in pending if level > total]:
            del pending[level]
    return starts


def scale_downs(samples: Sequence[Sample]) -> list[float]:
    """When the running count fell."""
    return [b[0] for a, b in zip(samples, samples[1:]) if b[1] < a[1]]


def first_time_running(samples: Sequence[Sample], replicas: int, after_s: float = 0.0) -> float | None:
    return next((t for t, running, _ in samples if t >= after_s and running >= replicas), None)


def saturation_windows(samples: Sequence[Sample], high: Window, settle_s: float,
                       queue: Sequence[QueueSample] | None = None) -> dict[str, Window | None]:
    """In the high phase (load above one replica's capacity): `one` while one replica ran, `two` once two
    ran, each less its first `settle_s` (queues fill, a new replica's batch ramps up). The high rate is
    below two replicas' capacity, so `two` is saturated only while the backlog queued at the router
    under one replica drains: with the router's queue depth known, it ends when the queue first empties."""
    start, end = high
    two_at = first_time_running(samples, 2, after_s=start)
    one_end = min(end, two_at) if two_at is not None else end
    one = (start + settle_s, one_end) if one_end - start > 2 * settle_s else None
    two = None
    if two_at is not None:
        two_end = end if queue is None else next((t for t, depth in queue if two_at + settle_s <= t < end and depth == 0),
                                                 end)
        two = (two_at + settle_s, two_end) if two_end - two_at > 2 * settle_s else None
    return {"one": one, "two": two}


def scaling_throughput(requests: Sequence[RampRequest], samples: Sequence[Sample], high: Window, settle_s: float,
                       queue: Sequence[QueueSample] | None = None) -> dict[str, Any]:
    """Output tok/s with one replica saturated vs with two saturated, both in the high phase."""
    windows = saturation_windows(samples, high, settle_s, queue)
    rates = _output_tok_s(requests, windows)
    return {"windows": windows, "one_replica_tok_s": rates["one"], "two_replicas_tok_s": rates["two"],
            "ratio": _ratio(rates["two"], rates["one"])}


def _output_tok_s(requests: Sequence[RampRequest], windows: Mapping[str, Window | None]) -> dict[str, float | None]:
    return {name: None if w is None else output_tokens_in(requests, w) / (w[1] - w[0]) for name, w in windows.items()}


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if denominator and numerator is not None else None


def saturated_scaling(requests: Sequence[RampRequest], samples: Sequence[Sample], end_s: float,
                      settle_s: float = 10.0, probe_tok_s: float | None = None) -> dict[str, Any]:
    """A closed-loop run with enough clients to fill two replicas' batches, scaled up by the policy
    itself: output tok/s while one replica ran vs once two ran, each window less its first `settle_s`,
    the second up to `end_s` (the last send). `probe_tok_s`, one replica's closed-loop throughput from
    the capacity probe, stands in for the first window when the run began with two running."""
    two_at = first_time_running(samples, 2)
    one = (settle_s, two_at) if two_at is not None and two_at - settle_s > settle_s else None
    two = (two_at + settle_s, end_s) if two_at is not None and end_s - two_at > 3 * settle_s else None
    rates = _output_tok_s(requests, {"one": one, "two": two})
    return {"two_running_at_s": two_at, "windows": {"one": one, "two": two}, "one_replica_tok_s": rates["one"],
            "two_replicas_tok_s": rates["two"], "probe_one_replica_tok_s": probe_tok_s,
            "ratio": _ratio(rates["two"], rates["one"]), "ratio_to_probe": _ratio(rates["two"], probe_tok_s)}


def timeline_error(measured: Sequence[Sample], simulated: Sequence[Sample], end_s: float, step_s: float = 1.0) -> float | None:
    """Mean |simulated - measured| running count over [0, end_s) on a `step_s` grid, over the mean measured count."""
    grid = [i * step_s for i in range(int(end_s / step_s))]
    if not grid or not measured or not simulated:
        return None
    measured_mean = sum(running_at(measured, t) for t in grid) / len(grid)
    difference = sum(abs(running_at(simulated, t) - running_at(measured, t)) for t in grid) / len(grid)
    return difference / measured_mean if measured_mean > 0 else None


def relative_error(measured: float | None, simulated: float | None) -> float | None:
    if measured is None or simulated is None or measured == 0:
        return None
    return abs(simulated - measured) / measured


# ---- one run's figures, the simulator's error, the goals -----------------------------------------------
def run_figures(requests: Sequence[RampRequest], samples: Sequence[Sample], slos: Mapping[str, Slo],
                phases: Sequence[tuple[str, float, float]], queue: Sequence[QueueSample] | None = None,
                settle_s: float = 10.0) -> dict[str, Any]:
    """What a run (measured or simulated) is judged by; replica-seconds up to the schedule's end."""
    end = phases[-1][2]
    high = next((start, stop) for name, start, stop in phases if name == "high")
    lost = [r for r in requests if r.kind == "lost"]
    return {"requests": len(requests), "phases": phase_stats(requests, slos, phases),
            "replica_seconds_running": round(replica_seconds(samples, end, 1), 1),
            "replica_seconds_allocated": round(replica_seconds(samples, end, 2), 1),
            "max_running": max((s[1] for s in samples), default=0), "replica_starts": replica_starts(samples),
            "scale_downs_s": scale_downs(samples), "scaling": scaling_throughput(requests, samples, high, settle_s, queue),
            "lost": len(lost), "lost_examples": [r.to_dict() for r in lost[:10]]}


def simulator_error(measured: Mapping[str, Any], simulated: Mapping[str, Any], measured_samples: Sequence[Sample],
                    simulated_samples: Sequence[Sample], end_s: float) -> dict[str, Any]:
    """The simulator against a measured run: replicas over time and each class's goodput over the run."""
    run_m, run_s = measured["phases"]["run"], simulated["phases"]["run"]
    return {"replicas_over_time": timeline_error(measured_samples, simulated_samples, end_s),
            "goodput": {name: relative_error(run_m[name]["goodput_rps"], run_s.get(name, {}).get("goodput_rps"))
                        for name in run_m if name != "all"}}


def _within(value: float | None) -> bool:
    return value is not None and value <= SIMULATOR_TOLERANCE


def goals(runs: Mapping[str, Mapping[str, Any]], errors: Mapping[str, Mapping[str, Any]],
          saturation: Mapping[str, Any] | None = None) -> list[dict]:
    """Issue 20's four goals from the `run_figures` of the `default` and `llm` runs, the simulator's
    errors per policy and, when measured, the `llm` policy's closed-loop `saturated_scaling` (else the
    ramp's own high phase judges two replicas against one); a run that is missing is an unmet goal."""
    out = []
    llm, default = runs.get("llm"), runs.get("default")
    if llm and default:
        good = {p: runs[p]["phases"]["run"]["interactive"]["goodput_rps"] for p in ("llm", "default")}
        cost = {p: runs[p]["replica_seconds_allocated"] for p in ("llm", "default")}
        ratio = good["llm"] / good["default"] if good["default"] else None
        out.append(goal("llm policy: interactive goodput vs default, at <= replica-seconds",
                        {"ratio": ratio, "interactive_goodput_rps": good, "replica_seconds": cost},
                        f">= {INTERACTIVE_GOODPUT_GOAL}x at <= replica-seconds",
                        ratio is not None and ratio >= INTERACTIVE_GOODPUT_GOAL and cost["llm"] <= cost["default"]))
    else:
        out.append(goal("llm policy: interactive goodput vs default", None, "both policies' runs", False))
    measured_runs = {p: r for p, r in runs.items() if r}
    lost = {p: r["lost"] for p, r in measured_runs.items()}
    downs = {p: len(r["scale_downs_s"]) for p, r in measured_runs.items()}
    out.append(goal("nothing lost in scale-down", {"lost": lost, "scale_downs": downs},
                    "0 lost in both runs, each with a scale-down",
                    len(measured_runs) == 2 and not any(lost.values()) and all(downs.values())))
    if saturation is not None:
        ratio = saturation["ratio"] if saturation["ratio"] is not None else saturation["ratio_to_probe"]
        out.append(goal("two replicas vs one saturated, output tok/s (llm policy's scaling, closed loop)",
                        dict(saturation), f">= {TWO_REPLICA_SCALING_GOAL}x",
                        ratio is not None and ratio >= TWO_REPLICA_SCALING_GOAL))
    else:
        ratios = {p: r["scaling"]["ratio"] for p, r in measured_runs.items()}
        llm_ratio = ratios.get("llm")
        out.append(goal("two replicas vs one saturated, output tok/s (llm policy's scaling, ramp's high phase)",
                        {"ratio": ratios, "llm": llm and {k: llm["scaling"][k] for k in
                                                           ("one_replica_tok_s", "two_replicas_tok_s", "windows")}},
                        f">= {TWO_REPLICA_SCALING_GOAL}x", llm_ratio is not None and llm_ratio >= TWO_REPLICA_SCALING_GOAL))
    for policy in ("default", "llm"):
        error = errors.get(policy)
        if error is None:
            out.append(goal(f"simulator vs measured ({policy})", None, "a measured and a simulated run", False))
            continue
        out.append(goal(f"simulator: replicas over time ({policy})", error["replicas_over_time"],
                        f"mean |difference| <= {SIMULATOR_TOLERANCE:.0%} of the mean measured count",
                        _within(error["replicas_over_time"])))
        for name, value in error["goodput"].items():
            out.append(goal(f"simulator: {name} goodput ({policy})", value,
                            f"within {SIMULATOR_TOLERANCE:.0%} of measured", _within(value)))
    return out
