"""A vLLM stat logger that keeps the latest scheduler figures for the replica to report."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from vllm.v1.metrics.loggers import StatLoggerBase

from serve_app.policy.recent_latency import RecentInterTokenTimes


@dataclass
class EngineSnapshot:
    num_running: int = 0
    num_waiting: int = 0
    kv_cache_usage: float = 0.0
    num_preemptions_total: int = 0
    num_generation_tokens_total: int = 0
    # Speculative decoding since start (0 when off): drafts (one per sequence and step), their tokens, and
    # the tokens the target accepted.
    spec_drafts: int = 0
    spec_drafted_tokens: int = 0
    spec_accepted_tokens: int = 0

    @property
    def spec_acceptance_rate(self) -> float | None:
        """Accepted / drafted tokens, as vLLM's own spec-decode log computes it; None before any draft."""
        return self.spec_accepted_tokens / self.spec_drafted_tokens if self.spec_drafted_tokens else None

    def __post_init__(self) -> None:
        # Not fields: `as_dict` reports counters, and these are read on their own.
        self.recent_inter_token = RecentInterTokenTimes()
        # time.monotonic() of the engine's last step (vLLM sends its stats with every step while it has
        # requests, also a step that finished no token): the stuck-engine watch's heartbeat.
        self.last_step_at: float | None = None

    def as_dict(self) -> dict:
        return {**asdict(self), "spec_acceptance_rate": self.spec_acceptance_rate}


class SnapshotStatLogger(StatLoggerBase):
    """Receives every engine step's stats (vLLM calls `record`) and keeps a running snapshot."""

    def __init__(self, vllm_config, engine_index: int = 0, snapshot: EngineSnapshot | None = None):
        self.vllm_config = vllm_config
        self.snapshot = snapshot if snapshot is not None else EngineSnapshot()

    def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
        self.snapshot.last_step_at = time.monotonic()
        if scheduler_stats is not None:
            self.snapshot.num_running = scheduler_stats.num_running_reqs
            self.snapshot.num_waiting = scheduler_stats.num_waiting_reqs
            self.snapshot.kv_cache_usage = scheduler_stats.kv_cache_usage
            # One step's counts (vllm/v1/spec_decode/metrics.py SpecDecodingStats); None without speculation.
            spec = getattr(scheduler_stats, "spec_decoding_stats", None)
            if spec is not None:
                self.snapshot.spec_drafts += spec.num_drafts
                self.snapshot.spec_drafted_tokens += spec.num_draft_tokens
                self.snapshot.spec_accepted_tokens += spec.num_accepted_tokens
        if iteration_stats is not None:
            self.snapshot.recent_inter_token.add(getattr(iteration_stats, "inter_token_latencies_iter", ()))
            self.snapshot.num_preemptions_total += iteration_stats.num_preempted_reqs
            self.snapshot.num_generation_tokens_total += iteration_stats.num_generation_tokens

    def log_engine_initialized(self):
        pass


def engine_stat_loggers(snapshot: EngineSnapshot, export_engine_metrics: bool) -> list:
    """`AsyncLLM(stat_loggers=...)`: our snapshot, and vLLM's Prometheus metrics through Ray's metrics (which
    also keeps vLLM from adding its in-process Prometheus logger that no endpoint of ours serves)."""
    loggers: list = [snapshot_logger_factory(snapshot)]
    if export_engine_metrics:
        from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger
        loggers.append(RayPrometheusStatLogger)
    return loggers


def snapshot_logger_factory(snapshot: EngineSnapshot):
    """A per-engine factory as `AsyncLLM(stat_loggers=[...])` expects, all writing to one snapshot."""
    def factory(vllm_config, engine_index: int = 0) -> SnapshotStatLogger:
        return SnapshotStatLogger(vllm_config, engine_index, snapshot)
    return factory
