"""`llmserve autoscale`: a rate sweep -> capacity -> the config's `autoscaling:` section, printed or written.

Writing replaces only the top-level `autoscaling:` block of the YAML file (comments elsewhere stay),
keeps the section's policy, llm knobs and drain timeout, and validates the result as a whole config.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import yaml

from autoscaling.capacity import MEASURED_REPLICA_START_S, SloChoice, derive_autoscaling, estimate_capacity, sweep_table
from serve_app.statistics import SUMMARY_KEYS

_TOP_LEVEL_KEY = re.compile(r"^[A-Za-z_][\w-]*\s*:")


def register(subcommands: argparse._SubParsersAction) -> None:
    """`llmserve autoscale`, added through the `llmserve.commands` entry point (see pyproject.toml)."""
    parser = subcommands.add_parser("autoscale", help="rate sweep -> per-replica capacity -> the config's "
                                    "autoscaling section (printed; --write puts it in --config)")
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sweep", required=True, help="rate sweep JSON ({\"kind\": \"rate_sweep\", \"runs\": [...]})")
    parser.add_argument("--slo-class", help="class whose SLO defines capacity; default: overall (needs --ttft-slo)")
    parser.add_argument("--ttft-slo", type=float, help="TTFT limit, s; default: the class's SLO in the runs")
    parser.add_argument("--tpot-slo", type=float, help="TPOT limit, s; default: the class's SLO in the runs")
    parser.add_argument("--percentile", default="p99", choices=SUMMARY_KEYS)
    parser.add_argument("--max-unserved-share", type=float, default=0.01,
                        help="refused + failed share a passing run may have (default 0.01)")
    parser.add_argument("--replicas-in-sweep", type=int, default=1, help="replicas the sweep ran against")
    parser.add_argument("--peak-rps", type=float, required=True, help="peak request rate to provision for")
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--headroom", type=float, default=0.2, help="share of capacity kept free (default 0.2)")
    parser.add_argument("--replica-start-s", type=float, default=MEASURED_REPLICA_START_S,
                        help="seconds a new replica takes to serve (sets the downscale delay); default: the "
                        "slowest warm-cache start measured on an H200")
    parser.add_argument("--policy", choices=["default", "llm"], help="autoscaling policy; default: keep the config's")
    parser.add_argument("--config", help="YAML config to write the section into (with --write)")
    parser.add_argument("--write", action="store_true", help="write the section into --config")


def section_for(args: argparse.Namespace, existing: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """The new `autoscaling:` mapping (existing policy knobs kept) and the lines explaining it."""
    sweep = json.loads(Path(args.sweep).read_text())
    slo = SloChoice(slo_class=args.slo_class, ttft_slo_s=args.ttft_slo, tpot_slo_s=args.tpot_slo,
                    percentile=args.percentile, max_unserved_share=args.max_unserved_share)
    estimate = estimate_capacity(sweep, slo, args.replicas_in_sweep)
    derived = derive_autoscaling(estimate, args.peak_rps, args.min_replicas, args.headroom,
                                 replica_start_s=args.replica_start_s)
    section = {**(existing or {}), "enabled": True, **derived.settings()}
    if args.policy:
        section["policy"] = args.policy
    lines = [f"sweep {args.sweep}: {len(estimate.points)} runs"]
    lines += [f"  run {row['run']}: {row['rate_rps']} req/s per replica, in flight {row['in_flight']}, "
              f"{'meets' if row['meets_slo'] else 'misses'} the SLO "
              f"({', '.join(f'{k}={v}' for k, v in row.items() if k.endswith('_margin'))})"
              for row in sweep_table(estimate.points)]
    lines += [f"- {reason}" for reason in derived.reasons]
    return section, lines


def replace_section(text: str, section: dict[str, Any]) -> str:
    """`text` with its top-level `autoscaling:` block replaced by (or appended as) `section`."""
    block = yaml.safe_dump({"autoscaling": section}, sort_keys=False, default_flow_style=False)
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith("autoscaling:")), None)
    if start is None:
        return text + ("" if text.endswith("\n") or not text else "\n") + block
    end = next((i for i in range(start + 1, len(lines)) if _TOP_LEVEL_KEY.match(lines[i])), len(lines))
    return "".join(lines[:start]) + block + "".join(lines[end:])


def run(args: argparse.Namespace) -> int:
    from serve_app.config import load_config, parse_config

    existing = None
    text = ""
    if args.config:
        text = Path(args.config).read_text()
        existing = load_config(args.config).autoscaling.model_dump(mode="json")
    section, lines = section_for(args, existing)
    print("\n".join(lines))
    print(yaml.safe_dump({"autoscaling": section}, sort_keys=False), end="")
    if not args.write:
        return 0
    if not args.config:
        print("llmserve autoscale: --write needs --config")
        return 2
    new_text = replace_section(text, section)
    parse_config(yaml.safe_load(new_text))  # the whole file must still be a valid config
    Path(args.config).write_text(new_text)
    print(f"wrote the autoscaling section into {args.config}; re-render the KubeRay manifests with "
          "`llmserve render-manifests --out manifests` (and commit both)")
    return 0
