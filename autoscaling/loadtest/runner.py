"""Runs a workload against a server: open loop (every request sent at its planned time, whatever the
server does) or, with `max_concurrency`, at most that many open at once (as `vllm bench serve
--max-concurrency`: arrivals still follow the schedule, a request waits for a free slot).

By default a request's latencies count from when it is sent, after any wait for a slot, as `vllm bench
serve` measures them. With `latency_from_arrival` they count from its scheduled arrival, and so does its
timeout: the client's slots then stand for a server's batch limit (`max_num_seqs`), whose queue wait a
user would see in TTFT."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from autoscaling.loadtest.client import ClientOptions, new_http_client, send
from autoscaling.loadtest.metrics import RequestRecord, Slo, all_stats, mean_in_flight
from autoscaling.loadtest.shared_prefix import DEFAULT_BLOCK_SIZE, SharedPrefixSpec, planned_ideal_hit_rate
from autoscaling.loadtest.workload import PlannedRequest, WorkloadSpec

Workload = WorkloadSpec | SharedPrefixSpec


@dataclass
class LoadTestResult:
    command: str
    base_url: str
    model: str
    workload: dict[str, Any]
    offered_rate_rps: float | None
    duration_s: float
    mean_in_flight: float
    overall: dict[str, Any]
    classes: dict[str, dict[str, Any]]
    records: list[RequestRecord] = field(default_factory=list, repr=False)
    tenants: dict[str, dict[str, Any]] | None = None

    @classmethod
    def from_records(cls, records: list[RequestRecord], spec: Workload, slos: Mapping[str, Slo], *,
                     command: str, base_url: str, model: str,
                     planned: list[PlannedRequest] | None = None) -> LoadTestResult:
        """Duration runs from the schedule's start (the earliest possible send, as `vllm bench serve`
        measures it) to the last response; the offered rate is requests sent over the send window."""
        duration = max((r.end_s for r in records), default=0.0)
        window = max((r.send_s for r in records), default=0.0)
        offered = len(records) / window if window > 0 else None
        stats = all_stats(records, duration, slos)
        workload = spec.to_dict()
        if planned and any(p.token_ids is not None for p in planned):
            workload["ideal_prefix_hit_rate"] = planned_ideal_hit_rate(planned)
            workload["ideal_prefix_hit_block_size"] = DEFAULT_BLOCK_SIZE
        return cls(command, base_url, model, workload, offered, duration, mean_in_flight(records, duration),
                   stats["overall"], stats["classes"], sorted(records, key=lambda r: r.index), stats.get("tenants"))

    def to_dict(self, include_requests: bool = False) -> dict[str, Any]:
        out = {"kind": "load_test", "command": self.command, "base_url": self.base_url, "model": self.model,
               "workload": self.workload, "offered_rate_rps": self.offered_rate_rps, "duration_s": self.duration_s,
               "mean_in_flight": self.mean_in_flight, "overall": self.overall, "classes": self.classes}
        if self.tenants is not None:
            out["tenants"] = self.tenants
        if include_requests:
            out["requests"] = [{"index": r.index, "class": r.class_name, "tenant": r.tenant, "status": r.status, "outcome": r.outcome,
                                "send_s": r.send_s, "ttft_s": r.ttft_s, "e2e_s": r.e2e_s, "end_s": r.end_s,
                                "output_tokens": r.output_tokens, "prompt_tokens": r.prompt_tokens,
                                "token_events": len(r.token_times_s), "error": r.error, "error_code": r.error_code,
                                "retry_after_s": r.retry_after_s} for r in self.records]
        return out

    def to_json(self, include_requests: bool = False) -> str:
        return json.dumps(self.to_dict(include_requests), indent=2)


class _Progress:
    """tqdm bar over sent requests, showing how each ended."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar = tqdm(total=total, unit="req", desc="load", disable=not enabled, dynamic_ncols=True)
        self._counts: Counter[str] = Counter()

    def done(self, record: RequestRecord) -> None:
        self._counts[record.outcome] += 1
        self._bar.set_postfix(completed=self._counts["completed"], refused=self._counts["refused"],
                              failed=self._counts["failed"], refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


async def run_load(spec: Workload, options: ClientOptions, *, slos: Mapping[str, Slo] | None = None,
                   progress: bool = True, command: str = "", warmup_requests: int = 0,
                   latency_from_arrival: bool = False) -> LoadTestResult:
    """Send the workload's planned requests and measure them. `warmup_requests` sequential requests
    (the first planned one, repeated) go first and are not counted."""
    planned = spec.plan()
    async with new_http_client(options.timeout_s) as http:
        for _ in range(warmup_requests if planned else 0):
            await send(http, options, planned[0], time.perf_counter())
        records = await _send_all(http, options, planned, spec.max_concurrency, progress, latency_from_arrival)
    return LoadTestResult.from_records(records, spec, slos or {}, command=command, base_url=options.base_url,
                                       model=options.model, planned=planned)


async def _send_all(http, options: ClientOptions, planned: list[PlannedRequest], max_concurrency: int | None,
                    progress: bool, latency_from_arrival: bool = False) -> list[RequestRecord]:
    bar = _Progress(len(planned), progress)
    slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    zero = time.perf_counter()

    async def one(request: PlannedRequest) -> RequestRecord:
        if slots is None:
            record = await send(http, options, request, zero)
        elif latency_from_arrival:
            record = await _send_when_free(http, options, request, zero, slots)
        else:
            async with slots:
                record = await send(http, options, request, zero)
        bar.done(record)
        return record

    tasks = []
    try:
        for request in planned:
            delay = zero + request.send_offset_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(request)))
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        bar.close()


async def _send_when_free(http, options: ClientOptions, request: PlannedRequest, zero: float,
                          slots: asyncio.Semaphore) -> RequestRecord:
    """`send` once a slot is free, timed from the scheduled arrival; the timeout counts from it too."""
    arrival = zero + request.send_offset_s
    try:
        async with asyncio.timeout_at(asyncio.get_running_loop().time() + options.timeout_s
                                      - (time.perf_counter() - arrival)):
            await slots.acquire()
    except TimeoutError:
        ended = time.perf_counter() - zero
        return RequestRecord(request.index, request.class_name, send_s=request.send_offset_s, end_s=ended,
                             outcome="failed", prompt_tokens=request.prompt_len, tenant=request.tenant,
                             error=f"no free slot within {options.timeout_s}s of its arrival", error_code="timeout")
    try:
        waited_s = time.perf_counter() - arrival
        sent = dataclasses.replace(options, timeout_s=max(1e-3, options.timeout_s - waited_s))
        return await send(http, sent, request, zero, arrival_s=request.send_offset_s)
    finally:
        slots.release()
