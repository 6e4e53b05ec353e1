"""The replica's engine snapshot: vLLM's per-step scheduler stats summed into cumulative counts,
speculative decoding's drafted and accepted tokens among them; and their Prometheus export."""
from __future__ import annotations

import pytest
from vllm.v1.metrics.stats import SchedulerStats
from vllm.v1.spec_decode.metrics import SpecDecodingStats

from vllm.v1.metrics.stats import IterationStats

from serve_app.engine_stats import EngineSnapshot, SnapshotStatLogger
from serve_app.policy.recent_latency import RecentInterTokenTimes


def step(*drafts: tuple[int, int], num_spec_tokens: int = 3) -> SchedulerStats:
    """One engine step's stats as vLLM's scheduler builds them: one (drafted, accepted) per sequence."""
    spec = SpecDecodingStats.new(num_spec_tokens)
    for drafted, accepted in drafts:
        spec.observe_draft(drafted, accepted)
    return SchedulerStats(num_running_reqs=len(drafts), kv_cache_usage=0.25, spec_decoding_stats=spec)


def test_drafted_and_accepted_tokens_add_up_over_steps():
    logger = SnapshotStatLogger(vllm_config=None)
    logger.record(step((3, 1), (3, 0)), None)
    logger.record(step((2, 2)), None)
    logger.record(SchedulerStats(num_running_reqs=1), None)  # a step without drafts (nothing matched)
    snap = logger.snapshot
    assert (snap.spec_drafts, snap.spec_drafted_tokens, snap.spec_accepted_tokens) == (3, 8, 3)
    assert snap.spec_acceptance_rate == pytest.approx(3 / 8)
    assert snap.as_dict()["spec_acceptance_rate"] == pytest.approx(3 / 8)
    assert snap.num_running == 1


def test_without_speculation_the_rate_is_unknown_not_zero():
    logger = SnapshotStatLogger(vllm_config=None)
    logger.record(SchedulerStats(num_running_reqs=2, kv_cache_usage=0.5), None)
    stats = logger.snapshot.as_dict()
    assert (stats["spec_drafted_tokens"], stats["spec_accepted_tokens"]) == (0, 0)
    assert stats["spec_acceptance_rate"] is None


def test_recent_inter_token_times_are_the_mean_over_the_last_steps_tokens():
    now = [0.0]
    recent = RecentInterTokenTimes(horizon_s=5.0, clock=lambda: now[0])
    assert recent.summary() == {"tokens": 0, "mean_s": None, "max_s": None}
    recent.add([0.05, 0.05, 0.08])  # one step: three running requests got a token each
    now[0] = 3.0
    recent.add([0.06])
    recent.add([])  # a step with prefills only
    assert recent.summary() == {"tokens": 4, "mean_s": pytest.approx(0.06), "max_s": 0.08}
    now[0] = 6.0  # the first step is past the horizon
    assert recent.summary() == {"tokens": 1, "mean_s": pytest.approx(0.06), "max_s": 0.06}


def test_the_logger_feeds_each_steps_inter_token_times_to_the_snapshot():
    logger = SnapshotStatLogger(vllm_config=None)
    iteration = IterationStats()
    iteration.inter_token_latencies_iter = [0.04, 0.06]
    logger.record(None, iteration)
    assert logger.snapshot.recent_inter_token.summary()["mean_s"] == pytest.approx(0.05)
    assert "recent_inter_token" not in logger.snapshot.as_dict()


def test_loggers_of_one_replica_share_its_snapshot():
    snapshot = EngineSnapshot()
    SnapshotStatLogger(None, 0, snapshot).record(step((3, 3)), None)
    SnapshotStatLogger(None, 1, snapshot).record(step((3, 0)), None)
    assert (snapshot.spec_drafted_tokens, snapshot.spec_accepted_tokens) == (6, 3)


class FakeMetric:
    def __init__(self, name, description="", tag_keys=(), **_):
        self.name, self.total, self.value = name, 0, None

    def inc(self, value=1, tags=None):
        self.total += value

    def set(self, value, tags=None):
        self.value = value


def test_prometheus_counters_follow_the_cumulative_counts(monkeypatch):
    from serve_app.telemetry import metrics

    made: dict[str, FakeMetric] = {}

    def fake(name, **kwargs):
        made[name] = FakeMetric(name, **kwargs)
        return made[name]

    for kind in ("Counter", "Gauge", "Histogram"):
        monkeypatch.setattr(metrics, kind, fake)
    replica = metrics.ReplicaMetrics("r1")
    replica.observe_speculation(0, 0)  # speculation off: nothing exported
    assert made["llmserve_replica_spec_acceptance_ratio"].value is None
    replica.observe_speculation(8, 3)
    replica.observe_speculation(8, 3)  # no new drafts: counted once
    replica.observe_speculation(20, 5)
    assert made["llmserve_replica_spec_drafted_tokens_total"].total == 20
    assert made["llmserve_replica_spec_accepted_tokens_total"].total == 5
    assert made["llmserve_replica_spec_acceptance_ratio"].value == pytest.approx(5 / 20)
