"""The controller deployment: sizes each replica's batch from its own device's memory budget,
reconciles the prediction with what vLLM allocated, and keeps a window cap per replica.

A thin shell over `serve_app.policy.batch_controller`; replicas call it at start and then
report their load every few seconds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from serve_app.telemetry.autoscaling_signals import CounterRates
from serve_app.config import ConfigError, parse_config
from serve_app.deployments.serve_states import stopping_replica_ids
from serve_app.memory.batch_profile import BatchProfile
from serve_app.memory import ModelShape, get_preset
from serve_app.policy.batch_controller import (DeviceInfo, EnginePlan, LengthWindow, WindowCapState,
                                               apply_profile, next_window_cap, plan_engine, reconcile,
                                               speculation_cost)
from serve_app.policy.window_leases import share_windows
from serve_app.telemetry.log_names import service_logger

logger = service_logger("controller")
RECONCILE_TOLERANCE = 0.03
REPLICA_DEPLOYMENT = "LLMReplica"
STOPPING_REFRESH_S = 1.0
ROUTER_QUEUE_STALE_S = 5.0
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
LOAD_REPORT_PERIOD_S = 2.0  # how often each replica reports its load (and re-registers if unknown)
# A restarted controller has heard from every live replica after two report periods; until then its
# list is partial, and routers keep theirs.
RELEARN_S = 2 * LOAD_REPORT_PERIOD_S + 1
INGRESS_STALE_S = 3.0  # an ingress replica refreshes its leases twice a second; silent this long, it is gone


@dataclass
class _IngressReport:
    """What one ingress replica (each routes its own requests) said at its last lease refresh."""

    counts: CounterRates
    demand: list[int] = field(default_factory=list)
    depths: dict[str, float] = field(default_factory=dict)
    at: float = -1e18


def load_profile(path: str | None) -> BatchProfile | None:
    if path is None:
        return None
    try:
        return BatchProfile.from_json(Path(path).read_text())
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"engine.batch_profile: cannot use {path}: {error}") from None


def _plan_record(device: DeviceInfo, plan: EnginePlan) -> dict[str, Any]:
    return {"device": device.name, "device_kind": device.kind, "plan": plan.engine_args,
            "predicted_kv_tokens": plan.predicted_kv_tokens, "block_size": plan.block_size,
            "kv_sizing": plan.kv_sizing, "first_window_cap": plan.first_window_cap}


def _status_record(entry: dict[str, Any]) -> dict[str, Any]:
    record = {key: value for key, value in entry.items() if key not in ("lengths", "window")}
    window = entry.get("window")
    record["window"] = window.cap if isinstance(window, WindowCapState) else window
    if isinstance(window, WindowCapState):
        record["window_reason"] = window.reason
    return record


def _own_app_name() -> str | None:
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        return serve.get_replica_context().app_name
    except RayServeException:  # outside Ray Serve, e.g. in a unit test
        return None


class Controller:
    def __init__(self, config: dict, clock: Callable[[], float] = time.monotonic):
        self._config = parse_config(config)
        self._replicas: dict[str, dict[str, Any]] = {}
        self._clock = clock
        self._profile = load_profile(self._config.engine.batch_profile)
        self._ingress: dict[str, _IngressReport] = {}
        self._stopping: tuple[set[str], float] = (set(), -1e18)
        self._app_name = _own_app_name()
        self._started_at = clock()
        self._speculation_kv_tokens = speculation_cost(self._config.engine.speculative).extra_kv_tokens_per_sequence

    async def plan(self, replica_id: str, device: DeviceInfo, hf_config: dict,
                   draft_hf_config: dict | None = None) -> EnginePlan:
        """`draft_hf_config`: the speculative draft model's config.json (`engine.speculative.method: draft_model`)."""
        engine = self._config.engine
        preset = get_preset(engine.preset)
        plan = plan_engine(
            ModelShape.from_hf_config(hf_config), device, preset,
            max_model_len=engine.max_model_len, gpu_memory_utilization=engine.gpu_memory_utilization,
            max_num_batched_tokens=engine.max_num_batched_tokens or DEFAULT_MAX_NUM_BATCHED_TOKENS,
            kv_cache_dtype=engine.kv_cache_dtype, speculation=speculation_cost(engine.speculative, draft_hf_config),
            kv_sizing=engine.kv_sizing or "worst_case", engine_at_ceiling=engine.engine_at_ceiling,
        )
        if self._profile is not None:
            plan = apply_profile(plan, self._profile, preset)
        self._replicas[replica_id] = {**_plan_record(device, plan), "lengths": LengthWindow(), "window": None}
        pinned = engine.pinned_batch_args
        logger.info("replica %s on %s: planned engine args %s%s, predicted KV tokens %d", replica_id, device.name,
                    plan.engine_args, f" (the engine runs the config's pinned {pinned})" if pinned else "",
                    plan.predicted_kv_tokens)
        return plan

    async def report_allocation(self, replica_id: str, num_blocks: int, block_size: int, max_num_seqs: int,
                                plan: EnginePlan | None = None, device: DeviceInfo | None = None) -> dict[str, Any]:
        """vLLM's actual KV allocation; a prediction off by more than 3% is logged as a warning.

        Also how a replica (re-)registers: a restarted controller knows nothing, so replicas whose load
        report comes back unknown send this again with the plan they were given."""
        entry = self._replicas.setdefault(replica_id, {"lengths": LengthWindow(), "predicted_kv_tokens": 0})
        if plan is not None and device is not None and "plan" not in entry:
            entry.update(_plan_record(device, plan))
        # The plan's first cap (the KV-sized figure under `adaptive`) unless the engine runs fewer.
        first_cap = min(max_num_seqs, entry.get("first_window_cap") or max_num_seqs)
        entry.update(actual_kv_tokens=num_blocks * block_size, block_size=block_size, max_num_seqs=max_num_seqs,
                     last_report_s=self._clock(), window=WindowCapState(cap=first_cap))
        predicted = entry.get("predicted_kv_tokens", 0)
        if not predicted:  # batch size pinned by the config: nothing was predicted, nothing to check
            entry["relative_error"] = None
            return {"relative_error": None, "within_tolerance": None}
        result = reconcile(predicted, num_blocks, block_size)
        entry["relative_error"] = result.relative_error
        if not result.within_tolerance(RECONCILE_TOLERANCE):
            logger.warning("replica %s: predicted %d KV tokens, vLLM allocated %d (%+.1f%%)", replica_id,
                           predicted, num_blocks * block_size, 100 * result.relative_error)
        return {"relative_error": result.relative_error,
                "within_tolerance": result.within_tolerance(RECONCILE_TOLERANCE)}

    async def report_load(self, replica_id: str, finished_lengths: list[tuple[int, int]],
                          preemptions_total: int, kv_cache_usage: float | None = None,
                          engine_load: dict | None = None) -> int | None:
        """Observed lengths, preemptions and KV usage (0..1; None: not sent, and the cap does not grow)
        in, the replica's window cap for the router out; None for a replica this controller does not
        know (it restarted, or a router reported the replica lost), which then registers again with
        `report_allocation`. `engine_load` (requests running and waiting in the engine, the replica's
        event-loop lag) is kept for `status` as it came."""
        entry = self._replicas.get(replica_id)
        if entry is None:
            return None
        if entry.get("window") is None:
            return 1 << 30  # not reconciled yet: no cap beyond Ray Serve's own
        entry["last_report_s"] = self._clock()
        if engine_load is not None:
            entry["engine_load"] = engine_load
        for prompt_len, output_len in finished_lengths:
            entry["lengths"].observe(prompt_len, output_len)
        entry["window"] = next_window_cap(entry["window"], kv_tokens=entry["actual_kv_tokens"],
                                          block_size=entry["block_size"], lengths=entry["lengths"],
                                          preemptions_total=preemptions_total,
                                          max_num_seqs=entry["max_num_seqs"], kv_cache_usage=kv_cache_usage,
                                          extra_kv_tokens_per_seq=self._speculation_kv_tokens)
        return entry["window"].cap

    async def routable_replicas(self) -> dict[str, int] | None:
        """Replicas whose engine is up and that reported recently, each with its window cap; None while
        this controller is too new to know them all (a restart: replicas register again as they report)."""
        if self._clock() - self._started_at < RELEARN_S:
            return None
        stale_before = self._clock() - self._config.router.stale_replica_s
        stopping = await self._stopping_replicas()
        return {replica_id: entry["window"].cap for replica_id, entry in self._replicas.items()
                if entry.get("window") is not None and entry.get("last_report_s", -1e18) >= stale_before
                and replica_id not in stopping}

    async def lease_windows(self, ingress_id: str, demand_by_rank: list[int], depths: dict[str, float],
                            capacity_counts: dict[str, tuple[int, int]]) -> dict[str, int] | None:
        """An ingress replica's share of every routable replica's window (`policy.window_leases`), given
        the requests it holds per class rank; also its queue per class and cumulative (arrivals,
        capacity refusals) per class for the autoscaling policy. None: see `routable_replicas`."""
        now = self._clock()
        report = self._ingress.get(ingress_id)
        if report is None:
            report = self._ingress[ingress_id] = _IngressReport(CounterRates(self._config.autoscaling.llm.slo_window_s))
        report.demand, report.depths, report.at = list(demand_by_rank), dict(depths), now
        report.counts.observe(capacity_counts, now)
        for gone in [i for i, r in self._ingress.items() if now - r.at > INGRESS_STALE_S]:
            del self._ingress[gone]
        caps = await self.routable_replicas()
        if caps is None:
            return None
        return share_windows(caps, {i: r.demand for i, r in self._ingress.items()})[ingress_id]

    async def _stopping_replicas(self) -> set[str]:
        """Replicas Serve is draining (downscale): no new requests, their running ones finish."""
        if self._app_name is None or not self._config.autoscaling.enabled:
            return set()
        ids, at = self._stopping
        if self._clock() - at >= STOPPING_REFRESH_S:
            ids = await stopping_replica_ids(self._app_name, REPLICA_DEPLOYMENT)
            self._stopping = (ids, self._clock())
        return ids

    async def router_capacity_rates(self) -> dict[str, tuple[float, float]]:
        """Per class, (arrivals/s, refused for capacity/s) over the last `slo_window_s`, summed over the
        ingress replicas that reported lately; empty when none did."""
        total: dict[str, tuple[float, float]] = {}
        for report in self._ingress.values():
            for name, (arrivals, refused) in report.counts.rates(self._clock(), ROUTER_QUEUE_STALE_S).items():
                before = total.get(name, (0.0, 0.0))
                total[name] = (before[0] + arrivals, before[1] + refused)
        return total

    async def router_queue_depths(self) -> dict[str, float]:
        """Queued requests per class over the ingress replicas that reported lately."""
        total: dict[str, float] = {}
        for report in self._ingress.values():
            if self._clock() - report.at <= ROUTER_QUEUE_STALE_S:
                for name, depth in report.depths.items():
                    total[name] = total.get(name, 0.0) + depth
        return total

    async def forget_replica(self, replica_id: str) -> None:
        """A router saw the replica die; stop handing it out before its reports go stale."""
        self._replicas.pop(replica_id, None)

    async def ping(self) -> bool:
        """For the health route: the controller answers."""
        return True

    async def status(self) -> dict[str, Any]:
        """Per replica: its plan (with `kv_sizing`), allocation, window cap and what last moved it."""
        return {replica_id: _status_record(entry) for replica_id, entry in self._replicas.items()}
