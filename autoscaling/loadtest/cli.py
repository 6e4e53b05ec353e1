"""`python -m autoscaling.loadtest run|sweep|report ...`: the load driver's command line."""
from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from pathlib import Path

import httpx

from autoscaling.loadtest.client import ClientOptions
from autoscaling.loadtest.metrics import Slo
from autoscaling.loadtest.preset_workload import PresetWorkload, preset_workload
from autoscaling.loadtest.report import summary_table, write_report
from autoscaling.loadtest.runner import run_load
from autoscaling.loadtest.shared_prefix import SharedPrefixSpec, parse_tenant_keys, parse_tenant_rates
from autoscaling.loadtest.sweep import run_sweep
from autoscaling.loadtest.workload import (SpecError, WorkloadSpec, parse_arrival, parse_length, parse_mix,
                                           parse_output_length, parse_slo)

DEFAULT_CLASS = "default"  # the one class of a run without --mix; no priority is sent then
DEFAULT_LENGTH = "fixed:256"


def _load_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", required=True, help="server root, e.g. http://127.0.0.1:8000 (no /v1)")
    parser.add_argument("--model", help="model id to send (default: the first of GET /v1/models)")
    parser.add_argument("--arrival", default="poisson:1",
                        help="poisson:RATE | gamma:RATE:cv=CV | step:DURxRATE,... | ramp:START:END:DURATION")
    parser.add_argument("--duration", type=float, help="seconds of arrivals")
    parser.add_argument("--num-requests", type=int, help="requests to send")
    parser.add_argument("--mix", help="class mix, e.g. interactive=0.2,batch=0.8 (default: no priority sent)")
    parser.add_argument("--priority-field", choices=("body", "header", "none"), default="body",
                        help="send the class as the body's `priority`, the x-priority header, or not at all")
    parser.add_argument("--prompt-len", help="fixed:N | uniform:LO:HI | lognormal:MEAN:SIGMA[:min=N][:max=N] | "
                                             f"trace:PATH.jsonl (default {DEFAULT_LENGTH})")
    parser.add_argument("--output-len", help="as --prompt-len; `trace` reuses the prompt trace")
    parser.add_argument("--api-key", action="append", default=[], help="KEY for all classes, or CLASS=KEY (repeat)")
    parser.add_argument("--slo", action="append", default=[], help="CLASS=TTFT_S,TPOT_S (repeat; - for none)")
    parser.add_argument("--slo-from-config", help="app config YAML whose priority_classes give the SLOs")
    parser.add_argument("--max-concurrency", type=int, help="closed loop: at most this many requests open")
    parser.add_argument("--latency-from-arrival", action="store_true",
                        help="with --max-concurrency: TTFT, end-to-end latency and the request timeout count from "
                             "each request's scheduled arrival, so the wait for a free slot counts (as it would in "
                             "a server's queue); default: from when it is sent, as `vllm bench serve` does")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600.0, help="per-request timeout, seconds")
    parser.add_argument("--warmup", type=int, default=0, help="uncounted sequential requests before the run")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", help="write the result JSON here")
    shared = parser.add_argument_group("shared-prefix workload (--workload shared-prefix)")
    shared.add_argument("--workload", choices=("classes", "shared-prefix", "preset"), default="classes",
                        help="classes: random prompts by --prompt-len; shared-prefix: tenants each reusing a prefix; "
                             "preset: a use-case preset's lengths and SLO (--preset)")
    shared.add_argument("--tenants", type=int, default=4, help="tenants, each with its own prefix")
    shared.add_argument("--prefix-len", type=int, default=1024, help="words (= tokens) of each tenant's prefix")
    shared.add_argument("--suffix-len", type=int, default=128, help="words of each conversation's suffix")
    shared.add_argument("--conversations", default="8",
                        help="suffixes per tenant, each reused when drawn; `none`: a new suffix per request")
    shared.add_argument("--tenant-rates", default="equal",
                        help="each tenant's share of the rate: equal | W1,W2,... | zipf:S")
    shared.add_argument("--tenant-key", action="append", default=[],
                        help="API keys, one per tenant in order: KEY1,KEY2,... or @FILE (one a line); repeatable")
    preset = parser.add_argument_group("preset workload (--workload preset)")
    preset.add_argument("--preset", help="interactive | mixed | batch | long-form: log-normal lengths with the "
                                         "preset's mean and p95, its TTFT/TPOT as the SLO (one class, the preset's name)")
    preset.add_argument("--max-model-len", type=int, default=4096,
                        help="the server's context: the preset's lengths are scaled down to fit it, each request "
                             "clipped to it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autoscaling.loadtest", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one load test")
    _load_args(run)
    run.add_argument("--save-requests", action="store_true", help="add every request's record to the JSON")
    sweep = sub.add_parser("sweep", help="the same workload at several Poisson/gamma rates")
    _load_args(sweep)
    sweep.add_argument("--rates", required=True, help="comma-separated arrival rates (req/s)")
    sweep.add_argument("--report-dir", help="also write the report (PNGs, report.md) here")
    report = sub.add_parser("report", help="plots and table from a saved run or sweep JSON")
    report.add_argument("result", help="a run or sweep JSON")
    report.add_argument("--out", required=True, help="directory for the PNGs and report.md")
    return parser


def slos_from_args(args: argparse.Namespace) -> dict[str, Slo]:
    slos: dict[str, Slo] = {}
    if args.slo_from_config:
        from serve_app.config import load_config

        for c in load_config(args.slo_from_config).priority_classes:
            slos[c.name] = Slo(c.ttft_slo_s, c.tpot_slo_s)
    if args.workload == "preset":
        workload = preset_workload_from_args(args)
        slos[workload.class_name] = workload.slo
    for text in args.slo:
        name, ttft, tpot = parse_slo(text)
        slos[name] = Slo(ttft, tpot)
    return slos


def api_keys_from_args(values: list[str]) -> dict[str, str]:
    keys = {}
    for value in values:
        name, sep, key = value.partition("=")
        keys.update({name: key} if sep else {"*": value})
    return keys


def preset_workload_from_args(args: argparse.Namespace) -> PresetWorkload:
    if not args.preset:
        raise SpecError("--workload preset needs --preset NAME")
    if args.mix or args.prompt_len or args.output_len:
        raise SpecError("--workload preset takes its class and lengths from --preset: drop --mix/--prompt-len/--output-len")
    return preset_workload(args.preset, args.max_model_len)


def spec_from_args(args: argparse.Namespace) -> WorkloadSpec | SharedPrefixSpec:
    if args.workload == "shared-prefix":
        return shared_prefix_spec_from_args(args)
    if args.workload == "preset":
        return preset_workload_from_args(args).spec(parse_arrival(args.arrival), duration_s=args.duration,
                                                    num_requests=args.num_requests,
                                                    max_concurrency=args.max_concurrency, seed=args.seed)
    prompt_len = parse_length(args.prompt_len or DEFAULT_LENGTH)
    return WorkloadSpec(arrival=parse_arrival(args.arrival),
                        class_mix=parse_mix(args.mix) if args.mix else {DEFAULT_CLASS: 1.0},
                        prompt_len=prompt_len, output_len=parse_output_length(args.output_len or DEFAULT_LENGTH,
                                                                              prompt_len),
                        duration_s=args.duration, num_requests=args.num_requests,
                        max_concurrency=args.max_concurrency, seed=args.seed)


def shared_prefix_spec_from_args(args: argparse.Namespace) -> SharedPrefixSpec:
    mix = parse_mix(args.mix) if args.mix else {DEFAULT_CLASS: 1.0}
    if len(mix) != 1:
        raise SpecError("--workload shared-prefix sends one class: give --mix one class name")
    try:
        conversations = None if args.conversations == "none" else int(args.conversations)
    except ValueError:
        raise SpecError(f"--conversations {args.conversations!r}: expected a number or none") from None
    return SharedPrefixSpec(arrival=parse_arrival(args.arrival), tenants=args.tenants, prefix_len=args.prefix_len,
                            suffix_len=args.suffix_len, output_len=parse_length(args.output_len or DEFAULT_LENGTH),
                            conversations=conversations,
                            tenant_weights=parse_tenant_rates(args.tenant_rates, args.tenants),
                            api_keys=parse_tenant_keys(args.tenant_key, args.tenants), class_name=next(iter(mix)),
                            duration_s=args.duration, num_requests=args.num_requests,
                            max_concurrency=args.max_concurrency, seed=args.seed)


def options_from_args(args: argparse.Namespace) -> ClientOptions:
    model = args.model or first_model(args.base_url)
    return ClientOptions(args.base_url, model, api_keys_from_args(args.api_key) or None,
                         priority_header=args.priority_field == "header",
                         send_priority=bool(args.mix) and args.priority_field != "none", timeout_s=args.timeout)


def first_model(base_url: str) -> str:
    response = httpx.get(f"{base_url.rstrip('/')}/v1/models", timeout=30)
    response.raise_for_status()
    return response.json()["data"][0]["id"]


def _write(path: str | None, text: str) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
        print(f"wrote {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    command = shlex.join(["python", "-m", "autoscaling.loadtest", *argv])
    try:
        if args.command == "report":
            result = json.loads(Path(args.result).read_text())
            for path in write_report(result, args.out):
                print(f"wrote {path}")
            return 0
        spec, options, slos = spec_from_args(args), options_from_args(args), slos_from_args(args)
        if args.command == "run":
            run = asyncio.run(run_load(spec, options, slos=slos, progress=not args.no_progress, command=command,
                                       warmup_requests=args.warmup, latency_from_arrival=args.latency_from_arrival))
            result = run.to_dict(include_requests=args.save_requests)
        else:
            rates = [float(r) for r in args.rates.split(",") if r.strip()]
            result = asyncio.run(run_sweep(spec, rates, options, slos=slos, progress=not args.no_progress,
                                           command=command, warmup_requests=args.warmup,
                                           latency_from_arrival=args.latency_from_arrival))
            if args.report_dir:
                write_report(result, args.report_dir)
    except (SpecError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _write(args.out, json.dumps(result, indent=2))
    print(summary_table(result))
    return 0
