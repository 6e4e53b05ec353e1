"""Autoscaling under a ramp: the `llm` policy takes LLMReplica 1 -> 2 -> 1 and no request is lost.

A side app (the shared one stays at one fixed replica) autoscales between 1 and 2 CPU replicas with
a small target and short delays. Closed-loop load goes low -> high (until the second replica has
served for a while) -> low (until Serve has drained it away). Every request must end served in full
or cleanly refused (429/503); scale-down drains the removed replica while requests still arrive.
"""
from __future__ import annotations

import asyncio
import json
import os

import pytest

from autoscaling.ramp import Phase, held, run_ramp
from serve_app.config import parse_config
from serve_app.local import delete_side_app, deploy_side_app

pytestmark = pytest.mark.integration
APP = "autoscale"
DOWNSCALE_DELAY_S = 20


@pytest.fixture(scope="module")
def side_url(app_config, base_url):
    data = app_config.model_dump(mode="json")
    data["autoscaling"] = {
        "enabled": True, "policy": "llm", "min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2,
        "upscale_delay_s": 3, "downscale_delay_s": DOWNSCALE_DELAY_S, "look_back_period_s": 15,
        "drain_timeout_s": 120, "llm": {"top_classes": ["interactive", "standard"], "slo_min_samples": 3},
    }
    # Meant to make replicas push their autoscaling metrics every second; Ray Serve 2.60 defines the
    # variable but still pushes every `metrics_interval_s` (10 s), hence the 15 s look-back above.
    data["replicas"]["env"] = {**data["replicas"].get("env", {}),
                               "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1"}
    url = deploy_side_app(parse_config(data), APP)
    yield url
    delete_side_app(APP)


def test_ramp_scales_one_to_two_to_one_and_loses_nothing(side_url, model_name, tmp_path):
    phases = [
        Phase("low", concurrency=1, min_s=10, max_s=10),
        # High until the second replica has run (and served) for 20 s.
        Phase("high", concurrency=12, min_s=20, max_s=420, until=lambda r: held(r, 2, 20)),
        # Low until Serve has drained it away and one replica has served alone for 10 s.
        Phase("low-again", concurrency=1, min_s=10, max_s=DOWNSCALE_DELAY_S + 180, until=lambda r: held(r, 1, 10)),
    ]
    result = asyncio.run(run_ramp(side_url, model_name, phases, APP, max_tokens=16))
    report = tmp_path / "ramp.json"
    report.write_text(json.dumps(result.to_json()))
    summary = (f"served {result.count('served')}, refused {result.count('refused')}, lost {result.count('lost')}; "
               f"phases {result.phases}; replicas {_changes(result.replicas)}")
    print(summary)
    if os.environ.get("LLMSERVE_RAMP_REPORT"):
        with open(os.environ["LLMSERVE_RAMP_REPORT"], "w") as out:
            json.dump(result.to_json(), out)

    lost = [o for o in result.outcomes if o.result == "lost"]
    assert lost == [], summary
    assert result.count("served") > 0
    running = [r for _, r, _ in result.replicas]
    assert running[0] == 1, summary
    first_two = running.index(2) if 2 in running else None
    assert first_two is not None, f"never scaled to 2: {summary}"
    assert 1 in running[first_two:], f"never scaled back to 1: {summary}"
    assert max(running) == 2  # max_replicas respected
    high = next(p for p in result.phases if p[0] == "high")
    assert high[2] - high[1] < 420, f"the high phase timed out: {summary}"
    last = next(p for p in result.phases if p[0] == "low-again")
    assert last[2] - last[1] < DOWNSCALE_DELAY_S + 180, f"no scale-down: {summary}"
    # The requests sent while the second replica was being drained were served too.
    drained_at = next(t for t, r, total in result.replicas if t > high[2] and r == 1)
    assert any(o.result == "served" and abs(o.sent_s - drained_at) < 10 for o in result.outcomes), summary


def _changes(samples: list[tuple[float, int, int]]) -> list[tuple[float, int, int]]:
    """Only the samples where the count changed."""
    out: list[tuple[float, int, int]] = []
    for sample in samples:
        if not out or sample[1:] != out[-1][1:]:
            out.append(sample)
    return out
