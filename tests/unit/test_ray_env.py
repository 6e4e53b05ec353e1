"""The environment `llmserve run` starts local Ray with, to keep an idle service's logs quiet."""
from __future__ import annotations

from serve_app.ray_env import QUIET_RAY_ENV


def test_event_stats_are_printed_rarely_never_in_a_loop():
    # Ray 2.60's GCS treats -1 (documented as "disable") as a zero period: gigabytes of logs in minutes.
    assert int(QUIET_RAY_ENV["RAY_event_stats_print_interval_ms"]) >= 600_000


def test_slow_start_warning_only_beyond_a_normal_engine_start():
    assert int(QUIET_RAY_ENV["RAY_SERVE_SLOW_STARTUP_WARNING_S"]) >= 180  # a CPU engine starts in about 2 minutes
