"""Rate sweep: the same workload at several arrival rates, one run each, in order."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from autoscaling.loadtest.arrivals import GammaArrivals
from autoscaling.loadtest.client import ClientOptions
from autoscaling.loadtest.metrics import Slo
from autoscaling.loadtest.runner import LoadTestResult, run_load
from autoscaling.loadtest.workload import SpecError, WorkloadSpec


def spec_at_rate(spec: WorkloadSpec, rate_rps: float) -> WorkloadSpec:
    """`spec` with its Poisson/gamma arrivals at `rate_rps` (step and ramp schedules have no one rate)."""
    if not isinstance(spec.arrival, GammaArrivals):
        raise SpecError(f"a rate sweep needs poisson or gamma arrivals, not {spec.arrival.to_dict()['kind']}")
    return dataclasses.replace(spec, arrival=spec.arrival.with_rate(rate_rps))


def sweep_dict(runs: Sequence[LoadTestResult], command: str) -> dict[str, Any]:
    return {"kind": "rate_sweep", "command": command, "runs": [run.to_dict() for run in runs]}


async def run_sweep(spec: WorkloadSpec, rates: Sequence[float], options: ClientOptions, *,
                    slos: Mapping[str, Slo] | None = None, progress: bool = True, command: str = "",
                    warmup_requests: int = 0) -> dict[str, Any]:
    specs = [spec_at_rate(spec, rate) for rate in rates]  # all checked before the first run
    runs = []
    for index, rate_spec in enumerate(specs):
        runs.append(await run_load(rate_spec, options, slos=slos, progress=progress, command=command,
                                   warmup_requests=warmup_requests if index == 0 else 0))
    return sweep_dict(runs, command)
