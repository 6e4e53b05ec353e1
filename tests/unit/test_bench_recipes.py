"""Every recipe in benchmarks/ imports and prints --help as the recorded results run it (from the
repository root, the repository on PYTHONPATH), imports no other script and touches no sys.path."""
from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_recipe_prints_its_help(recipe):
    done = subprocess.run([sys.executable, str(recipe.relative_to(ROOT)), "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "usage:" in done.stdout


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_recipe_imports_the_package_not_other_scripts(recipe):
    scripts = {path.stem for path in RECIPES} | {"_harness", "bench_summaries", "server_metrics", "bench_mix",
                                                 "priority_report", "priority_plots", "sweep_server"}
    tree = ast.parse(recipe.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported & scripts == set()
    assert "sys.path" not in recipe.read_text()


def _load(name: str):
    """A recipe as a module, by its path (its `main` does not run)."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ramp_latency_percentiles_are_the_one_definition():
    from autoscaling.ramp import Outcome, RampResult

    ramp = _load("autoscaling_ramp")
    result = RampResult(outcomes=[Outcome("high", 0.0, latency, 200, "served") for latency in (1.0, 2.0, 3.0, 4.0)],
                        replicas=[(0.0, 1, 1)], phases=[("high", 0.0, 10.0)])
    phase = ramp.summarize(result)["phases"]["high"]
    # numpy's linear method (serve_app.statistics); the script's own gave 3.0 and 4.0.
    assert phase["latency_p50_s"] == pytest.approx(2.5)
    assert phase["latency_p99_s"] == pytest.approx(3.97)
    assert phase["latency_mean_s"] == pytest.approx(2.5)


def test_batch_sweep_p99_is_the_one_definition():
    sweep = _load("batch_size_sweep")
    assert sweep.p99([1.0, 2.0, 3.0, 4.0]) == pytest.approx(3.97)  # the script's own gave 4.0


def test_routing_capacity_percentiles_are_the_one_definition():
    routing = _load("routing_capacity")
    figures = routing.percentiles_ms([0.001, 0.002, 0.003, 0.004])
    assert figures == {"p50_ms": 2.5, "p90_ms": 3.7, "p99_ms": 3.97}  # nearest rank gave 2.0, 4.0, 4.0


def test_an_engine_started_again_keeps_its_earlier_log_and_config_out_of_the_kv_checks_glob(tmp_path):
    cli = _load("controller_h200")
    cli.keep_earlier_files(tmp_path, "ours-fp16")  # nothing yet: nothing moves
    assert list(tmp_path.iterdir()) == []
    for round_ in ("mixed", "batch"):
        (tmp_path / "ours-fp16_server.log").write_text(round_)
        (tmp_path / "ours-fp16_config.yaml").write_text(round_)
        cli.keep_earlier_files(tmp_path, "ours-fp16")
    assert (tmp_path / "ours-fp16_server.1.log").read_text() == "mixed"
    assert (tmp_path / "ours-fp16_config.2.yaml").read_text() == "batch"
    assert list(tmp_path.glob("*_server.log")) == []
