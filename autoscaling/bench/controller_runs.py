"""benchmarks/controller_h200.py's runs: load-driver runs side by side with their requests saved
gzipped, a preset run's figures and timeout, and the clock that keeps a measure call within its budget."""
from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from autoscaling.bench.controller_plans import run_row
from autoscaling.bench.host import log
from autoscaling.bench.priority_load import router_stats
from autoscaling.loadtest.client import ClientOptions
from autoscaling.loadtest.metrics import Slo
from autoscaling.loadtest.preset_workload import PresetWorkload
from autoscaling.loadtest.runner import run_load
from autoscaling.loadtest.workload import WorkloadSpec
from serve_app.statistics import percentile, slo_outcome, tpot_s


SAMPLE_INTERVAL_S = 2.0


def router_windows(stats: dict) -> dict:
    """What a `/v1/router/stats` snapshot says of the adaptive windows: per replica its window, cap and
    requests in flight (and, where given, its controller's state: the latency averages it steers by and
    its moves counted by rule), and the router's queue; and where the ingress says so, how late its event
    loop woke lately and its streams (sending, writes so far, pacing's gaps). `ttft_recent` splits the
    first token's wait over the last seconds per class: as the ingress saw it (from the request reaching it)
    and as the replica did (from the dispatch reaching it), beside the router queue's waits (`queue_wait`),
    so that a client's TTFT minus these is the path outside the ingress (the proxy and the client);
    `first_part_path` splits the ingress's figure by stage (`serve_app.generation.FirstPartStamps`)."""
    replicas = {}
    for rid, r in (stats.get("replicas") or {}).items():
        replicas[rid] = {k: r.get(k) for k in ("window", "window_cap", "in_flight")}
        if "window_state" in r:
            replicas[rid]["window_state"] = r["window_state"]
    sample = {"queue_depth": stats.get("queue_depth"), "replicas": replicas}
    ingress = stats.get("ingress")
    if ingress:
        stalls = ingress.get("loop_stalls") or {}
        lag = stalls.get("lag_recent") or {}
        sample["ingress"] = {"loop_lag_p99_s": lag.get("p99_s"), "loop_lag_max_s": lag.get("max_s"),
                             "cpu_recent": stalls.get("cpu_recent"), "streams": ingress.get("streams")}
        if ingress.get("first_part_path"):
            sample["first_part_path"] = ingress["first_part_path"]
    ttft_recent = {"ingress": (ingress or {}).get("ttft_recent"), "replica": stats.get("replica_ttft_recent")}
    if any(ttft_recent.values()):
        sample["ttft_recent"] = ttft_recent
    waits = {name: {"p50_s": c.get("queue_wait_p50_s"), "p99_s": c.get("queue_wait_p99_s")}
             for name, c in (stats.get("classes") or {}).items() if "queue_wait_p50_s" in c}
    if waits:
        sample["queue_wait"] = waits
    return sample


def engine_loads(base_url: str) -> dict | None:
    """Per replica, what it last reported of its engine's queue and its event loop's lag
    (`/v1/controller/status`'s `engine_load`); None when the controller did not answer."""
    try:
        status = httpx.get(f"{base_url}/v1/controller/status", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return None
    return {rid: entry["engine_load"] for rid, entry in status.items()
            if isinstance(entry, dict) and entry.get("engine_load")} if isinstance(status, dict) else None


async def sample_router(base_url: str, interval_s: float = SAMPLE_INTERVAL_S) -> list[dict]:
    """`router_windows` every `interval_s` until cancelled, with how long the ingress took to answer
    (`answer_s`) and each engine's last load report (`engines`, from `engine_loads`); returns the samples
    taken (t from the start). A snapshot the server did not give is a gap in the timeline, not a failed run."""
    samples: list[dict] = []
    started = time.monotonic()
    try:
        while True:
            asked = time.monotonic()
            stats = await asyncio.to_thread(router_stats, base_url, True)
            at = {"t_s": round(asked - started, 2)}
            # How long the ingress took to answer: its event loop's lag as a request meets it.
            answered = {"answer_s": round(time.monotonic() - asked, 4)}
            if stats is None:
                samples.append({**at, "error": "no answer"})
            else:
                samples.append({**at, **router_windows(stats), **answered})
                engines = await asyncio.to_thread(engine_loads, base_url)
                if engines:
                    samples[-1]["engines"] = engines
            await asyncio.sleep(interval_s)
    except asyncio.CancelledError:
        return samples


def load(options: ClientOptions, raw_dir: Path, name: str, specs: dict[str, WorkloadSpec], *,
         latency_from_arrival: bool = False, delays_s: dict[str, float] | None = None,
         slos: dict[str, Slo] | None = None, sample_router_windows: bool = False) -> dict[str, dict]:
    """Runs the specs at once (each its own stream, `delays_s` after the start), the driver judging
    goodput by `slos` per class; saves each run's requests gzipped as raw_dir/<name>.json.gz and returns
    the load driver's results with their requests. With `sample_router_windows` (our app), every
    result also carries `router_timeline`: `sample_router`'s samples over the whole run."""

    async def one(key: str, spec: WorkloadSpec) -> dict:
        await asyncio.sleep((delays_s or {}).get(key, 0.0))
        result = await run_load(spec, options, slos=slos, progress=False, command=f"{name}:{key}",
                                latency_from_arrival=latency_from_arrival)
        return result.to_dict(include_requests=True)

    async def all_of() -> list[dict]:
        sampler = asyncio.ensure_future(sample_router(options.base_url)) if sample_router_windows else None
        try:
            results = await asyncio.gather(*(one(key, spec) for key, spec in specs.items()))
        finally:
            if sampler is not None:
                sampler.cancel()
        if sampler is not None:
            timeline = await sampler
            for result in results:
                result["router_timeline"] = timeline
        return results

    started = time.monotonic()
    results = dict(zip(specs, asyncio.run(all_of())))
    raw_dir.mkdir(parents=True, exist_ok=True)
    with gzip.open(raw_dir / f"{name}.json.gz", "wt") as handle:
        json.dump(results, handle)
    counts = ", ".join(f"{key} {r['overall']['completed']}/{r['overall']['sent']}" for key, r in results.items())
    log(f"{name}: {counts} completed in {time.monotonic() - started:.0f}s")
    return results


def slo_timeout_s(wl: PresetWorkload) -> float:
    """The longest end-to-end latency within the SLO (TTFT + TPOT x (longest output - 1)), and a margin:
    a request cut off there could not have met its SLO."""
    return wl.preset.ttft_s + wl.preset.tpot_s * (wl.output_len.max - 1) + 5.0


def preset_slos(wl: PresetWorkload) -> dict[str, Slo]:
    """What `load` judges a preset's runs by: the preset's SLO for its one class."""
    return {wl.class_name: wl.slo}


def figures(result: dict, wl: PresetWorkload) -> dict:
    """`run_row` of a preset run's stats, which `load` judged against the preset's SLO (`preset_slos`)."""
    stats = result["classes"][wl.class_name]
    if stats["slo"] != wl.slo.to_dict():
        raise ValueError(f"{result['command']}: judged against {stats['slo']}, not the preset's SLO")
    return run_row(stats, result["duration_s"])


def requests_by_outcome(requests: list[dict], slo: Slo) -> dict[str, float]:
    """Shares of a saved run's requests (`load`'s raw file) that met the SLO, missed it on TTFT alone, on
    TPOT alone or both, or did not complete; `met` is the run's SLO attainment."""
    counts = dict.fromkeys(("met", "ttft_only", "tpot_only", "both", "not_completed"), 0)
    for request in requests:
        counts[_outcome(request, slo)] += 1
    return {"sent": len(requests), **{k: v / len(requests) if requests else 0.0 for k, v in counts.items()}}


def _outcome(request: dict, slo: Slo) -> str:
    if request["outcome"] != "completed":
        return "not_completed"
    tpot = (tpot_s(request["e2e_s"], request["ttft_s"], request["output_tokens"] or 0)
            if request["ttft_s"] is not None and request["e2e_s"] is not None else None)
    return slo_outcome(request["ttft_s"], tpot, slo.ttft_s, slo.tpot_s)


def by_arrival(requests: list[dict], slo: Slo, bucket_s: float = 10.0) -> list[dict]:
    """A saved run's requests per `bucket_s` of their send time: how many, the share that met the SLO and
    TTFT p10 / p50 / p90 (s) of those with a first token. Shows a long run's course: the ramp, then the
    steady state (or its drift)."""
    buckets: dict[int, list[dict]] = {}
    for request in requests:
        buckets.setdefault(int(request["send_s"] // bucket_s), []).append(request)
    rows = []
    for index in sorted(buckets):
        members = buckets[index]
        ttfts = sorted(r["ttft_s"] for r in members if r["ttft_s"] is not None)
        rows.append({"t_s": index * bucket_s, "sent": len(members),
                     "met": sum(_outcome(r, slo) == "met" for r in members) / len(members),
                     **{f"ttft_p{q}_s": percentile(ttfts, q) for q in (10, 50, 90)}})
    return rows


def saved_runs_by_outcome(raw_files: dict[str, dict], slo_of: Callable[[str], Slo | None]) -> dict[str, dict]:
    """`requests_by_outcome` of every saved run (raw file name -> its contents) whose name `slo_of` gives an
    SLO for; runs measured before the load driver split the misses get the split this way."""
    return {f"{name}:{key}": requests_by_outcome(result["requests"], slo)
            for name, runs in sorted(raw_files.items()) if (slo := slo_of(name)) is not None
            for key, result in runs.items() if result.get("requests") is not None}


class Clock:
    """Stops a measure call before its time budget: a step starts only if one more like the longest so far
    (and at least `min_step_s`) fits. Started before the engine is waited for, so the wait counts: in run 3
    a call that waited 3 min for the engine started a run 9 s before its budget ended and was killed at
    the device's 10-minute limit, losing its output. `now` is a monotonic clock (a fake one in tests)."""

    def __init__(self, budget_s: float, min_step_s: float = 0.0, now: Callable[[], float] = time.monotonic):
        self._now = now
        self.started, self.budget_s, self.longest_s = now(), budget_s, min_step_s

    def step_fits(self) -> bool:
        return self._now() - self.started + self.longest_s <= self.budget_s

    def done(self, since: float) -> None:
        self.longest_s = max(self.longest_s, self._now() - since)
