"""`llmserve bench ...`: the benchmark index, summaries of a saved `vllm bench serve` result, a
server's Prometheus figures, and running a recipe from `benchmarks/`.

Registered through the `llmserve.commands` entry point group (`register` adds the `bench` parser).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from autoscaling.bench.index import RESULTS_DIR, default_benchmarks_dir, find_recipe, load_index


def register(subcommands: argparse._SubParsersAction) -> None:
    bench = subcommands.add_parser("bench", help="benchmarks: list recipes and results, summarize, scrape, run")
    bench.add_argument("--benchmarks-dir", type=Path, default=None,
                       help="the recipes' folder (default: benchmarks/ of this checkout)")
    commands = bench.add_subparsers(dest="bench_command", required=True)

    listing = commands.add_parser("list", help="the recipes and their recorded results (benchmarks/index.yaml)")
    listing.add_argument("--json", action="store_true", help="the index as JSON")
    listing.set_defaults(func=_cmd_list)

    summarize = commands.add_parser("summarize", help="figures of saved `vllm bench serve --save-result` JSONs")
    summarize.add_argument("results", type=Path, nargs="+", help="raw result JSON(s)")
    summarize.set_defaults(func=_cmd_summarize)

    metrics = commands.add_parser("metrics", help="a server's vLLM Prometheus figures (load, KV cache, counters)")
    metrics.add_argument("url", help="the server's base URL or its /metrics URL")
    metrics.add_argument("--all", action="store_true", help="every sample name, summed over labels")
    metrics.set_defaults(func=_cmd_metrics)

    run = commands.add_parser("run", help="run benchmarks/<recipe>.py with the arguments that follow")
    run.add_argument("recipe", help="a recipe's name from `llmserve bench list`")
    run.add_argument("recipe_args", nargs=argparse.REMAINDER, help="passed to the recipe unchanged")
    run.set_defaults(func=_cmd_run)


def _benchmarks_dir(args: argparse.Namespace) -> Path:
    return args.benchmarks_dir or default_benchmarks_dir()


def _cmd_list(args: argparse.Namespace) -> int:
    recipes = load_index(_benchmarks_dir(args))
    if args.json:
        print(json.dumps([r.model_dump() for r in recipes], indent=2))
        return 0
    for recipe in recipes:
        results = ", ".join(f"{RESULTS_DIR}/{path}" for path in recipe.results) or "(per run, --out)"
        print(f"{recipe.name}  [{recipe.needs}]\n    {recipe.purpose}\n    goal: {recipe.goal}\n"
              f"    run: {recipe.usage}\n    results: {results}")
    return 0


def _cmd_summarize(args: argparse.Namespace) -> int:
    from autoscaling.bench.result_summaries import class_summary
    from autoscaling.bench.vllm_bench import headline

    status = 0
    for path in args.results:
        try:
            result = json.loads(path.read_text())
            summary = {**headline(result), **class_summary(result)}
        except (OSError, ValueError, KeyError, TypeError) as error:
            print(f"llmserve bench summarize: {path}: not a `vllm bench serve` result ({error!r})", file=sys.stderr)
            status = 2
            continue
        print(json.dumps({"file": str(path), **summary}, indent=2))
    return status


def _cmd_metrics(args: argparse.Namespace) -> int:
    from autoscaling.bench.prometheus_metrics import fetch_metrics_text, metrics_url, samples_by_name, watched_totals

    url = metrics_url(args.url)
    text = fetch_metrics_text(url)
    if text is None:
        print(f"llmserve bench metrics: no metrics at {url}", file=sys.stderr)
        return 1
    figures = ({name: sum(values) for name, values in samples_by_name(text).items()} if args.all
               else watched_totals(text))
    print(json.dumps({"url": url, **figures}, indent=2))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    benchmarks = _benchmarks_dir(args)
    recipes = load_index(benchmarks)
    recipe = find_recipe(recipes, args.recipe)
    if recipe is None:
        print(f"llmserve bench run: no recipe {args.recipe!r}; known: {', '.join(r.name for r in recipes)}",
              file=sys.stderr)
        return 2
    script = benchmarks / recipe.script_name
    interpreter = ["bash"] if script.suffix == ".sh" else [sys.executable]
    root = benchmarks.parent
    # From the repository root with it on the path, as recorded results cite: `python benchmarks/<x>.py`.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([*interpreter, str(script.relative_to(root)), *args.recipe_args], cwd=root,
                          env=env).returncode
