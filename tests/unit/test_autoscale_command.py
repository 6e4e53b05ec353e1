"""`llmserve autoscale`: sweep file -> printed derivation -> the config's autoscaling section."""
from __future__ import annotations

import json
import math

from test_capacity import run, sweep
from test_cli_plugins import declared_commands

from serve_app.cli import main
from serve_app.config import load_config

CONFIG = """# the shape we deploy (comment kept)
replicas: {num_replicas: 2}
autoscaling:
  policy: llm
  llm: {kv_cache_high: 0.8}
  drain_timeout_s: 300
default_priority: standard
"""


def test_autoscale_writes_the_section_and_keeps_the_rest(tmp_path, capsys):
    sweep_path = tmp_path / "sweep.json"
    sweep_path.write_text(json.dumps(sweep(run(1, 0.1, 0.05), run(2, 0.3, 0.05), run(4, 0.7, 0.05))))
    config_path = tmp_path / "app.yaml"
    config_path.write_text(CONFIG)
    assert main(["autoscale", "--sweep", str(sweep_path), "--slo-class", "interactive", "--peak-rps", "40",
                 "--config", str(config_path), "--write"], plugins=declared_commands()) == 0
    out = capsys.readouterr().out
    assert "target_ongoing_requests" in out and "render-manifests" in out
    text = config_path.read_text()
    assert text.startswith("# the shape we deploy (comment kept)") and "default_priority: standard" in text
    section = load_config(config_path).autoscaling
    assert section.enabled and section.policy == "llm" and section.llm.kv_cache_high == 0.8
    assert section.drain_timeout_s == 300
    assert section.max_replicas == math.ceil(40 / (3.0 * 0.8))  # capacity 3 req/s (see test_capacity)
    assert section.upscale_delay_s < section.downscale_delay_s


def test_autoscale_without_write_changes_nothing_and_bad_sweeps_fail_cleanly(tmp_path, capsys):
    sweep_path = tmp_path / "sweep.json"
    sweep_path.write_text(json.dumps(sweep(run(1, 0.9, 0.05))))  # misses the SLO at the lowest rate
    config_path = tmp_path / "app.yaml"
    config_path.write_text(CONFIG)
    assert main(["autoscale", "--sweep", str(sweep_path), "--slo-class", "interactive", "--peak-rps", "10",
                 "--config", str(config_path), "--write"], plugins=declared_commands()) == 2
    assert "even the lowest rate" in capsys.readouterr().err
    assert config_path.read_text() == CONFIG
