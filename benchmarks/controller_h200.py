"""Issue 19 on one H200: the controller's batch-size plans against vLLM's defaults and a sweep, chunked
prefill's token budget, FP8 KV. Pure parts: autoscaling/bench/controller_plans.py (plans, goodput, goals).

    plan --out DIR                          the plans per preset and the engines to start (no GPU)
    start --out DIR --engine E              starts engine E in the background (first stopping any other
                                            engine this DIR started: one GPU)
    measure --out DIR --engine E --parts P,...   waits for E, measures what parts P need of it, writes DIR/P.json
    stop --out DIR                          stops the engine this DIR started
    summarize --out DIR                     summary.json, Pareto plots, summary.md from the part files

Engines: `vllm-<B>` is `vllm serve` with max_num_batched_tokens B; `ours-fp16` / `ours-fp8` our app (one
replica, the controller planning the batch for `start --ours-preset` (default mixed) by the default policy,
one class with that preset's SLO), KV cache in FP16 / FP8. A preset part measured on our app (started for
that preset) sends the sweep's requests at the part's rate once: the part's `app_run`, our app's row.
Parts: `preset-<name>` (interactive, mixed, batch, long-form): the preset's workload (log-normal lengths,
its TTFT/TPOT SLO); on vllm-8192 first a closed-loop capacity run with vLLM's defaults (1,024 clients),
then open-loop probes of vLLM's defaults from --load x its completions per second while every client was
busy, up (or down) by x1.25 and once between, to the lowest rate at which they meet the SLO for under 95%
of requests: the part's open-loop Poisson rate; then, on each engine of the part's budgets (each plan's and
8192), one open-loop run per max_num_seqs of the grid and of the plans. `chunked-prefill`: long prompts
(2-4k) arriving among long decodes, on each engine of CHUNKED_PREFILL_BUDGETS and the long-form plan's
budget: the prompts' TTFT p99 and the decodes' TPOT p99. `fp8-kv`: on ours-fp16 and ours-fp8, capacity
and goodput of the mixed workload at preset-mixed's rate (with the router's windows every 2 s),
predicted vs allocated KV from /v1/controller/status. `sustained`: on vllm-8192 (vLLM's defaults, as its
rows) and on ours-fp16, the mixed workload at --sustained-loads x preset-mixed's rate for --sustained-s of
arrivals (a request lives ~20 s: a 30-45 s run is mostly the ramp to the load). `summarize` also reads vLLM's KV allocation from
every engine's log (each `vllm-<B>` in FP16, our app's replicas in their dtype) against the controller's
prediction for it.

How max_num_seqs is swept without restarts: every vllm-<B> engine starts with the largest max_num_seqs
any setting needs (at most B), and a smaller max_num_seqs is emulated by the load driver's concurrency
cap, with each request's latency (and timeout) counted from its scheduled arrival, so a wait for a free
slot counts in TTFT as a wait in vLLM's queue would. Only the token budget needs an engine of its own.
Each run's timeout is the preset's SLO bound on end-to-end latency (TTFT + TPOT x longest output), so a
request cut off could not have met its SLO. `measure` stops before --time-budget-s would be passed and
a later call resumes where it stopped; each start and measure fits one 10-minute device call.

A CPU dry run measures a server already running (our app on the tiny model serves every part) with
`--base-url URL --served-name NAME --gpu cpu --shape tiny --model-dir DIR --max-model-len 512` and small
`--window-s`, `--capacity-requests`, `--grid`; start and stop are then skipped.
"""
from __future__ import annotations

import argparse
import gzip
import json
import shlex
import sys
import tarfile
import time
from pathlib import Path

import httpx

from autoscaling.bench import controller_plans as bench
from autoscaling.bench import controller_runs as bench_runs
from autoscaling.bench.controller_plots import (chunked_prefill, first_part_path, preset_pareto, router_timeline,
                                                runs_with_first_part_path, sustained_timeline, table)
from autoscaling.bench.host import archive, gpu_name, log
from autoscaling.bench.servers import DetachedServer, release_gpu, start_server, stop_detached, wait_for_detached
from autoscaling.bench.vllm_reference import SERVED_NAME, ensure_checkpoint, ours_serve_command, vllm_serve_command
from autoscaling.loadtest.arrivals import GammaArrivals
from autoscaling.loadtest.client import ClientOptions
from autoscaling.loadtest.lengths import Fixed, Uniform
from autoscaling.loadtest.metrics import Slo
from autoscaling.loadtest.preset_workload import PresetWorkload, preset_workload
from autoscaling.loadtest.workload import WorkloadSpec
from serve_app.memory import ModelShape
from serve_app.memory.gpus import gpu_memory_bytes
from serve_app.memory.presets import PRESETS, get_preset
from serve_app.policy.batch_controller import DeviceInfo

PORT = 8000
PRESET_PARTS = {f"preset-{name}": name for name in PRESETS}
PARTS = (*PRESET_PARTS, "chunked-prefill", "fp8-kv", "sustained")
CHUNKED_PRESET = "long-form"  # whose plan's budget the chunked-prefill part marks
FP8_PRESET = bench.FP8_KV_PRESET
OURS_ENGINES = {"ours-fp16": "auto", "ours-fp8": "fp8"}
# chunked-prefill: long prompts (few output tokens) arriving among decodes (short prompts, long outputs).
LONG_PROMPT_RANGE = (2048, 4096)
LONG_PROMPT_OUTPUT_LEN = 16
DECODE_PROMPT_LEN = 128


# ---- plans ------------------------------------------------------------------------------------------
def device(args: argparse.Namespace) -> DeviceInfo:
    if args.gpu == "cpu":  # a dry run: the CPU backend's KV space, as the replica reports it
        return DeviceInfo("cpu", "cpu", 0, 0, int(args.cpu_kv_gib * 1024**3))
    total = gpu_memory_bytes(args.gpu)
    return DeviceInfo("cuda", args.gpu, total, total)


def model_shape(args: argparse.Namespace) -> ModelShape:
    """From the checkpoint's config.json, or the synthetic shape's before the checkpoint is made."""
    path = args.model_dir / "config.json"
    if path.exists():
        return ModelShape.from_hf_config(json.loads(path.read_text()))
    from serve_app.synthetic_model import hf_config, shape_named

    return ModelShape.from_hf_config(hf_config(shape_named(args.shape)))


def plans(args: argparse.Namespace, preset: str, kv_cache_dtype: str = "auto") -> list[bench.Plan]:
    controller = [bench.controller_plan(policy, model_shape(args), device(args), get_preset(preset),
                                        max_model_len=args.max_model_len, kv_cache_dtype=kv_cache_dtype,
                                        gpu_memory_utilization=args.gpu_memory_utilization)
                  for policy in bench.available_policies(args.policies.split(","))]
    return [*controller, bench.vllm_default_plan()]


def part_budgets(args: argparse.Namespace, part: str) -> list[int]:
    if part in PRESET_PARTS:
        return bench.sweep_budgets(plans(args, PRESET_PARTS[part]), args.extra_budgets)
    if part == "chunked-prefill":
        return sorted({*bench.CHUNKED_PREFILL_BUDGETS, chunked_controller_budget(args)})
    if part == "sustained":  # vLLM's defaults' engine (and ours-fp16)
        return [bench.VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS]
    return []


def chunked_controller_budget(args: argparse.Namespace) -> int:
    return plans(args, CHUNKED_PRESET)[0].setting.max_num_batched_tokens


def all_plans(args: argparse.Namespace) -> list[bench.Plan]:
    return [p for name in PRESETS for p in plans(args, name)]


def workload(args: argparse.Namespace, preset: str) -> PresetWorkload:
    return preset_workload(preset, args.max_model_len)


def show_plan(args: argparse.Namespace) -> dict:
    engines = sorted({b for part in PARTS for b in part_budgets(args, part)})
    shown = {"presets": {name: [p.to_dict() for p in plans(args, name)] for name in PRESETS},
             "engines": {f"vllm-{b}": {"max_num_batched_tokens": b,
                                       "max_num_seqs": bench.engine_max_num_seqs(b, all_plans(args)),
                                       "parts": [p for p in PARTS if b in part_budgets(args, p)]} for b in engines}}
    shown["engines"].update({name: {"kv_cache_dtype": dtype,
                                    "parts": ["fp8-kv", "sustained"] if name == "ours-fp16" else ["fp8-kv"]}
                             for name, dtype in OURS_ENGINES.items()})
    return shown


# ---- engines ----------------------------------------------------------------------------------------
def base_url(args: argparse.Namespace) -> str:
    return args.base_url or f"http://127.0.0.1:{PORT}"


def engine_command(args: argparse.Namespace, engine: str) -> list[str]:
    if engine in OURS_ENGINES:
        config = bench.ours_kv_config(args.model_dir, PORT, get_preset(args.ours_preset), kv_cache_dtype=OURS_ENGINES[engine],
                                      policy=bench.DEFAULT_POLICY, max_model_len=args.max_model_len,
                                      gpu_memory_utilization=args.gpu_memory_utilization)
        return ours_serve_command(bench.with_sections(config, args.ours_sections), args.out / f"{engine}_config.yaml")
    budget = engine_budget(engine)
    # Later flags win over vllm_serve_command's own (its context and priority scheduling are the other
    # benchmarks'): vLLM's defaults are first-come first-served (runs 1 and 2 had `priority`, every
    # request at the same priority).
    return vllm_serve_command(args.model_dir, PORT, [
        "--scheduling-policy", "fcfs",
        "--max-model-len", str(args.max_model_len), "--gpu-memory-utilization", str(args.gpu_memory_utilization),
        "--max-num-batched-tokens", str(budget),
        "--max-num-seqs", str(bench.engine_max_num_seqs(budget, all_plans(args))), "--no-enable-prefix-caching"])


def engine_budget(engine: str) -> int:
    if not engine.startswith("vllm-") or not engine[5:].isdigit():
        raise SystemExit(f"engine {engine!r}: expected vllm-<budget>, ours-fp16 or ours-fp8")
    return int(engine[5:])


def server_files(out: Path) -> list[Path]:
    return sorted(out.glob("*_server.json"))


def start(args: argparse.Namespace) -> None:
    stop(args)
    ensure_checkpoint(args.model_dir, args.shape)
    keep_earlier_files(args.out, args.engine)
    command = engine_command(args, args.engine)
    server = start_server(command, args.out / f"{args.engine}_server.log")
    state = {"engine": args.engine, "pid": server.pid, "command": shlex.join(command), "started": time.time(),
             "recipe": shlex.join(["python", *sys.argv]),
             **({"preset": args.ours_preset} if args.engine in OURS_ENGINES else {})}
    (args.out / f"{args.engine}_server.json").write_text(json.dumps(state, indent=2))


def keep_earlier_files(out: Path, engine: str) -> None:
    """An engine started again in one DIR (our app for another preset) would overwrite its log and config:
    the earlier ones move to `<engine>_server.<n>.log` and `<engine>_config.<n>.yaml` first (out of the
    `*_server.log` that `kv_checks` reads: the KV allocation is the same at every start)."""
    earlier = [out / f"{engine}_server.log", out / f"{engine}_config.yaml"]
    if not any(path.exists() for path in earlier):
        return
    n = 1 + sum(1 for _ in out.glob(f"{engine}_server.*.log"))
    for path in earlier:
        if path.exists():
            path.rename(path.with_suffix(f".{n}{path.suffix}"))


def stop(args: argparse.Namespace) -> None:
    for path in server_files(args.out):
        state = json.loads(path.read_text())
        if DetachedServer(state["pid"]).poll() is None:
            log(f"stopping {state['engine']} (pid {state['pid']})")
            stop_detached(state["pid"])
            release_gpu()
        path.rename(path.with_name(f"{state['engine']}_stopped.json"))


def wait_for_engine(args: argparse.Namespace) -> dict | None:
    if args.base_url:
        return None
    path = args.out / f"{args.engine}_server.json"
    if not path.exists():
        raise SystemExit(f"{args.engine} was not started in {args.out} (run start first)")
    return wait_for_detached(path, f"{base_url(args)}/health", args.ready_timeout_s,
                             args.out / f"{args.engine}_server.log", args.engine)


# ---- runs -------------------------------------------------------------------------------------------
def load(args: argparse.Namespace, name: str, specs: dict[str, WorkloadSpec], timeout_s: float,
         **how) -> dict[str, dict]:
    options = ClientOptions(base_url(args), args.served_name, send_priority=False, timeout_s=timeout_s)
    return bench_runs.load(options, args.out / "raw", name, specs, **how)


def open_loop_run(args: argparse.Namespace, name: str, wl: PresetWorkload, rate: float, window_s: float,
                  max_concurrency: int | None, ours: bool = False) -> dict:
    """The open-loop run every row is: `window_s` of Poisson arrivals at `rate` of the same requests (seed 1)
    at every setting, at most `max_concurrency` open (None: no cap), each latency counted from its scheduled
    arrival (a wait for a free client slot counts as a wait in the engine's queue would) and judged by the
    preset's SLO; with `ours`, the router's windows sampled."""
    spec = wl.spec(GammaArrivals(rate), duration_s=window_s, max_concurrency=max_concurrency, seed=1)
    return load(args, name, {"run": spec}, bench_runs.slo_timeout_s(wl), latency_from_arrival=True,
                slos=bench_runs.preset_slos(wl), sample_router_windows=ours)["run"]


def closed_loop_run(args: argparse.Namespace, name: str, wl: PresetWorkload, ours: bool = False) -> dict:
    """--capacity-requests requests (seed 0) through vLLM's default 1,024 clients, each sent when one ends."""
    spec = wl.spec(GammaArrivals(float("inf")), num_requests=args.capacity_requests,
                   max_concurrency=bench.VLLM_DEFAULT_MAX_NUM_SEQS, seed=0)
    return load(args, name, {"run": spec}, bench_runs.slo_timeout_s(wl), slos=bench_runs.preset_slos(wl),
                sample_router_windows=ours)["run"]


def read_part(args: argparse.Namespace, part: str) -> dict:
    path = args.out / f"{part}.json"
    return json.loads(path.read_text()) if path.exists() else {"part": part, "gpu": gpu_name(), "commands": []}


def save_part(args: argparse.Namespace, part: dict) -> None:
    (args.out / f"{part['part']}.json").write_text(json.dumps(part, indent=2))


def measure_preset(args: argparse.Namespace, part: dict, clock: bench_runs.Clock) -> None:
    name = PRESET_PARTS[part["part"]]
    wl, budget = workload(args, name), engine_budget(args.engine)
    part.update(preset=name, workload=wl.to_dict(), plans=[p.to_dict() for p in plans(args, name)],
                budgets=part_budgets(args, part["part"]))
    part.setdefault("rows", [])
    earlier = args.carry_from / f"{part['part']}.json" if args.carry_from else None
    if "window_s" not in part:  # a part begun before windows were recorded keeps the one its runs had
        measured = part.get("rows") or any(not p.get("carried") for p in part.get("rate_probes") or [])
        part["window_s"] = bench.part_window_s(part) if measured else part_arrival_window_s(args, part["part"])
    window_s = part["window_s"]
    if "capacity" not in part and earlier is not None and earlier.exists():
        part.update(bench.carried_over(json.loads(earlier.read_text()), window_s), carried_from=str(earlier))
        log(f"{part['part']}: capacity and {len(part['rate_probes'])} probe(s) carried over from {earlier} "
            f"(probes only from runs with the same {window_s:g} s arrival window)")
    if "rate_rps" not in part:
        if args.rate is None and budget != bench.VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS:
            raise SystemExit(f"{part['part']}: measure it on vllm-{bench.VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS} first "
                             "(its capacity run sets the rate), or give --rate")
        if args.rate is None and "capacity" not in part:
            run = closed_loop_run(args, f"{part['part']}_capacity", wl)
            part["capacity"] = capacity_figures(run, wl)
            if not part["capacity"]["completed"]:
                raise SystemExit(f"{part['part']}: the capacity run completed none of its {part['capacity']['sent']} "
                                 f"requests (see {args.out / 'raw'}); is the engine serving?")
            save_part(args, part)
        rate = args.rate or search_rate(args, part, wl, clock, window_s)
        if rate is None:
            log(f"{part['part']}: time budget used in the rate search; measure again to go on")
            return
        part["rate_rps"] = rate
        default = bench.vllm_default_plan().setting
        probe = next((p for p in part.get("rate_probes") or [] if p["rate_rps"] == rate and not p.get("carried")), None)
        if probe is not None and budget == default.max_num_batched_tokens:
            part["rows"].append({**default.to_dict(), **probe})  # the same run a row would be
        save_part(args, part)
    done = {(r["max_num_batched_tokens"], r["max_num_seqs"]) for r in part["rows"]}
    for setting in bench.settings_at_budget(budget, [bench.Plan(p["label"], bench.EngineSetting(
            p["max_num_batched_tokens"], p["max_num_seqs"])) for p in part["plans"]], args.grid):
        if (budget, setting.max_num_seqs) in done:
            continue
        if not clock.step_fits():
            log(f"{part['part']}: time budget used; measure again to go on")
            return
        since = time.monotonic()
        run = open_loop_run(args, f"{part['part']}_{budget}_{setting.max_num_seqs}", wl, part["rate_rps"], window_s,
                            setting.max_num_seqs)
        part["rows"].append({**setting.to_dict(), "rate_rps": part["rate_rps"], **bench_runs.figures(run, wl)})
        save_part(args, part)
        clock.done(since)


def measure_app_run(args: argparse.Namespace, part: dict, clock: bench_runs.Clock, app_preset: str) -> None:
    """Our app's row of a preset part: the requests of the sweep's rows (its rate, arrival window, seed and
    client cap, latency from the scheduled arrival) sent once to our app started for that preset
    (`start --ours-preset`), with the router's windows sampled."""
    name = PRESET_PARTS[part["part"]]
    if app_preset != name:
        raise SystemExit(f"{part['part']}: {args.engine} was started for the {app_preset} preset; start it with "
                         f"--ours-preset {name}")
    if "rate_rps" not in part:
        raise SystemExit(f"{part['part']}: measure it on vllm-{bench.VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS} first "
                         "(its rate), or copy an earlier run's part file in")
    if part.get("app_run") is not None or not clock.step_fits():
        return
    wl = workload(args, name)
    run = open_loop_run(args, f"{part['part']}_{args.engine}", wl, part["rate_rps"], bench.part_window_s(part),
                        bench.VLLM_DEFAULT_MAX_NUM_SEQS, ours=True)
    part["app_run"] = {"engine": args.engine, "rate_rps": part["rate_rps"], **bench_runs.figures(run, wl),
                       "router_timeline": run["router_timeline"]}
    log(f"{part['part']}: our app met the SLO for {part['app_run']['slo_attainment']:.0%}")


def search_rate(args: argparse.Namespace, part: dict, wl: PresetWorkload, clock: bench_runs.Clock,
                window_s: float) -> float | None:
    """Open-loop probes on vLLM's defaults from --load x the closed-loop rate up (`bench.next_probe_rate`),
    kept in the part so that a later call resumes; None when the time budget ran out first."""
    probes = part.setdefault("rate_probes", [])
    start_rps = args.load * capacity_rps(part["capacity"])
    while (rate := bench.next_probe_rate(probes, start_rps, args.rate_probes)) is not None:
        if not clock.step_fits():
            return None
        since = time.monotonic()
        # The rows' requests at vLLM's defaults: the probe at the chosen rate is their row.
        run = open_loop_run(args, f"{part['part']}_probe_{len(probes)}", wl, rate, window_s,
                            bench.VLLM_DEFAULT_MAX_NUM_SEQS)
        probes.append({"rate_rps": rate, **bench_runs.figures(run, wl)})
        log(f"{part['part']}: vLLM's defaults at {rate:.2f} req/s met the SLO for {probes[-1]['slo_attainment']:.0%}")
        save_part(args, part)
        clock.done(since)
    return bench.searched_rate(probes) or start_rps


def capacity_figures(run: dict, wl: PresetWorkload) -> dict:
    """A closed-loop run's figures and its steady rate (while every client was busy)."""
    ends = [r["end_s"] for r in run["requests"] if r["outcome"] == "completed"]
    return {**bench_runs.figures(run, wl), "steady_request_rps": bench.steady_request_rate(ends)}


def capacity_rps(capacity: dict) -> float:
    return capacity.get("steady_request_rps") or capacity["request_throughput_rps"]


def long_prompt_lengths(max_model_len: int) -> Uniform:
    """2-4k tokens, or the upper half of what a shorter context leaves beside the output."""
    hi = min(LONG_PROMPT_RANGE[1], max_model_len - LONG_PROMPT_OUTPUT_LEN)
    return Uniform(min(LONG_PROMPT_RANGE[0], hi // 2), hi)


def measure_chunked(args: argparse.Namespace, part: dict, clock: bench_runs.Clock) -> None:
    budget = engine_budget(args.engine)
    part.update(controller_budget=chunked_controller_budget(args), budgets=part_budgets(args, "chunked-prefill"))
    part.setdefault("rows", [])
    if any(r["max_num_batched_tokens"] == budget for r in part["rows"]) or not clock.step_fits():
        return
    since = time.monotonic()
    common = dict(duration_s=args.window_s, class_mix={"default": 1.0})
    decode_len = min(args.decode_len, args.max_model_len - DECODE_PROMPT_LEN)
    decodes = WorkloadSpec(GammaArrivals(args.decode_rate), prompt_len=Fixed(DECODE_PROMPT_LEN),
                           output_len=Fixed(decode_len), seed=2, **common)
    prompts = WorkloadSpec(GammaArrivals(args.long_prompt_rate), prompt_len=long_prompt_lengths(args.max_model_len),
                           output_len=Fixed(LONG_PROMPT_OUTPUT_LEN), seed=3, **common)
    # The long prompts start once the decodes run: they arrive among decodes, not into an empty engine.
    runs = load(args, f"chunked-prefill_{budget}", {"decodes": decodes, "prompts": prompts},
                timeout_s=args.decode_len * 0.2 + 60, delays_s={"prompts": args.decode_lead_s})
    decode_row = bench.run_row(runs["decodes"]["overall"], runs["decodes"]["duration_s"])
    prompt_row = bench.run_row(runs["prompts"]["overall"], runs["prompts"]["duration_s"])
    part["rows"].append({"max_num_batched_tokens": budget, "prefill_ttft_p99_s": prompt_row["ttft_p99_s"],
                         "prefill_ttft_p50_s": prompt_row["ttft_p50_s"], "decode_tpot_p99_s": decode_row["tpot_p99_s"],
                         "decode_tpot_p50_s": decode_row["tpot_p50_s"], "decodes": decode_row, "prompts": prompt_row})
    save_part(args, part)
    clock.done(since)


def measure_fp8(args: argparse.Namespace, part: dict, clock: bench_runs.Clock) -> None:
    dtype = "fp8" if args.engine == "ours-fp8" else "fp16"
    wl = workload(args, FP8_PRESET)
    status = httpx.get(f"{base_url(args)}/v1/controller/status", timeout=30).json()
    part.setdefault("status", {})[dtype] = status
    part["predicted"] = {d: [p.to_dict() for p in plans(args, FP8_PRESET, k)] for d, k in (("fp16", "auto"), ("fp8", "fp8"))}
    runs = part.setdefault("runs", {}).setdefault(dtype, {})
    save_part(args, part)
    if "capacity" not in runs and clock.step_fits():
        run = closed_loop_run(args, f"fp8-kv_{dtype}_capacity", wl, ours=True)
        runs["capacity"] = {**capacity_figures(run, wl), "router_timeline": run["router_timeline"]}
        save_part(args, part)
    if "goodput" not in runs and "capacity" in runs and clock.step_fits():
        capacity = part["runs"].get("fp16", runs).get("capacity", runs["capacity"])
        mixed = read_part(args, f"preset-{FP8_PRESET}")
        rate = args.rate or mixed.get("rate_rps") or args.load * capacity_rps(capacity)
        # As preset-mixed's rows are sent and judged (its arrival window, client cap, latency from the scheduled
        # arrival), so that its row of vLLM's defaults at this rate compares with ours request for request.
        window_s = bench.part_window_s(mixed) if mixed.get("rate_rps") else part_arrival_window_s(args, part["part"])
        run = open_loop_run(args, f"fp8-kv_{dtype}_goodput", wl, rate, window_s, bench.VLLM_DEFAULT_MAX_NUM_SEQS,
                            ours=True)
        runs["goodput"] = {"rate_rps": rate, **bench_runs.figures(run, wl), "router_timeline": run["router_timeline"]}
        save_part(args, part)


def measure_sustained(args: argparse.Namespace, part: dict, clock: bench_runs.Clock) -> None:
    if args.engine == "ours-fp16":
        who = "ours-fp16"
    elif args.engine not in OURS_ENGINES and engine_budget(args.engine) == bench.VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS:
        who = "vllm-defaults"
    else:
        raise SystemExit(f"sustained is measured on vllm-{bench.VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS} and ours-fp16")
    wl = workload(args, FP8_PRESET)
    window_s = part.setdefault("window_s", args.sustained_s)
    part.setdefault("client_cap", args.sustained_client_cap or None)
    if "rates_rps" not in part:
        base = args.rate or read_part(args, f"preset-{FP8_PRESET}").get("rate_rps")
        if base is None:
            raise SystemExit(f"sustained: measure preset-{FP8_PRESET} first (its rate), or give --rate")
        part["rates_rps"] = [round(base * load, 4) for load in args.sustained_loads]
    runs = part.setdefault("runs", {}).setdefault(who, {})
    ours = who != "vllm-defaults"
    for rate in part["rates_rps"]:
        key = f"{rate:g}"
        if key in runs:
            continue
        if not clock.step_fits():
            log("sustained: time budget used; measure again to go on")
            return
        since = time.monotonic()
        # As preset-mixed's rows are sent and judged, but open loop by default: a client cap queues arrivals
        # first come first served in the client once it binds, whatever order the server would serve them in
        # (run5_sustained's 1,024 bound for ours from ~80 s on).
        run = open_loop_run(args, f"sustained_{who}_{key}", wl, rate, window_s, part["client_cap"], ours=ours)
        runs[key] = {"rate_rps": rate, **bench_runs.figures(run, wl),
                     **({"router_timeline": run["router_timeline"]} if ours else {})}
        log(f"sustained: {who} at {rate:g} req/s met the SLO for {runs[key]['slo_attainment']:.0%}")
        save_part(args, part)
        clock.done(since)


def part_arrival_window_s(args: argparse.Namespace, name: str) -> float:
    """A part's open-loop arrival window when it starts: a preset's (fp8-kv's is the mixed preset's) is at
    least twice its TTFT SLO (`bench.arrival_window_s`); chunked-prefill's is --window-s; sustained's
    --sustained-s."""
    if name == "sustained":
        return args.sustained_s
    preset = FP8_PRESET if name == "fp8-kv" else PRESET_PARTS.get(name)
    return bench.arrival_window_s(args.window_s, get_preset(preset).ttft_s) if preset else args.window_s


def longest_run_s(args: argparse.Namespace) -> float:
    """A run lasts its arrival window and then its drain (up to 1.7x the window in run 3): twice the
    longest window among the parts."""
    return 2 * max(part_arrival_window_s(args, name) for name in args.parts.split(","))


def measure(args: argparse.Namespace) -> None:
    clock = bench_runs.Clock(args.time_budget_s, min_step_s=longest_run_s(args))
    state = wait_for_engine(args)
    for name in args.parts.split(","):
        if name not in PARTS:
            raise SystemExit(f"part {name!r}: expected one of {', '.join(PARTS)}")
        part = read_part(args, name)
        # The start command too: what it set (`--ours-sections`, `--ours-preset`) is in no other line.
        for command in (state and state.get("recipe"), shlex.join(["python", *sys.argv]), state and state["command"]):
            if command and command not in part["commands"]:
                part["commands"].append(command)
        if name == "fp8-kv":
            if args.engine not in OURS_ENGINES:
                raise SystemExit("fp8-kv is measured on ours-fp16 and ours-fp8")
            measure_fp8(args, part, clock)
        elif name == "sustained":
            measure_sustained(args, part, clock)
        elif args.engine in OURS_ENGINES:
            if name not in PRESET_PARTS:
                raise SystemExit(f"{name} is measured on vllm-<budget> engines")
            measure_app_run(args, part, clock, (state or {}).get("preset", args.ours_preset))
        elif engine_budget(args.engine) in part_budgets(args, name):
            (measure_preset if name in PRESET_PARTS else measure_chunked)(args, part, clock)
        else:
            log(f"{name} has nothing to measure on {args.engine} (its budgets: {part_budgets(args, name)})")
        save_part(args, part)


def kv_checks(args: argparse.Namespace, fp8_part: dict | None) -> list[bench.KvCheck]:
    """The controller's KV prediction against vLLM's allocation: from our app's status where the fp8-kv
    part read it, else from each engine's log (a `vllm serve` at a budget, or our app's replica)."""
    checks = [c for dtype, status in ((fp8_part or {}).get("status") or {}).items()
              for c in bench.status_kv_checks(f"ours-{dtype}", dtype, status)]
    for path in sorted(args.out.glob("*_server.log")):
        engine = path.name.removesuffix("_server.log")
        allocated = bench.allocated_kv_tokens(path.read_text(errors="replace"))
        if allocated is None or any(c.engine == engine for c in checks):
            continue
        if engine in OURS_ENGINES:
            kv_dtype = OURS_ENGINES[engine]
            predicted = plans(args, FP8_PRESET, kv_dtype)[0].predicted_kv_tokens
        else:
            kv_dtype, predicted = "auto", bench.predicted_kv_tokens(
                model_shape(args), device(args), max_num_batched_tokens=engine_budget(engine), kv_cache_dtype="auto",
                max_model_len=args.max_model_len, gpu_memory_utilization=args.gpu_memory_utilization)
        checks.append(bench.KvCheck(engine, "fp8" if kv_dtype == "fp8" else "fp16", predicted, allocated,
                                    f"{path.name}: 'GPU KV cache size'"))
    return checks


def saved_runs(out: Path) -> dict[str, dict]:
    """Every run `load` saved under DIR/raw, or in DIR/raw.tgz once summarize archived them: name -> contents."""
    if (out / "raw").is_dir():
        return {p.name.removesuffix(".json.gz"): json.loads(gzip.open(p).read()) for p in (out / "raw").glob("*.json.gz")}
    if not (out / "raw.tgz").exists():
        return {}
    with tarfile.open(out / "raw.tgz") as tar:
        return {Path(m.name).name.removesuffix(".json.gz"): json.loads(gzip.decompress(tar.extractfile(m).read()))
                for m in tar.getmembers() if m.isfile() and m.name.endswith(".json.gz")}


def raw_run_slo(args: argparse.Namespace, name: str) -> Slo | None:
    """The SLO a saved run is judged by: its preset's (fp8-kv's and sustained's are the mixed preset's);
    chunked-prefill's runs have none."""
    part = name.split("_", 1)[0]
    preset = FP8_PRESET if part in ("fp8-kv", "sustained") else PRESET_PARTS.get(part)
    return workload(args, preset).slo if preset else None


def sustained_by_arrival(args: argparse.Namespace, raws: dict[str, dict]) -> dict[str, dict[str, list[dict]]]:
    """Engine -> rate key -> the sustained run's requests per 10 s of arrivals (`bench_runs.by_arrival`)."""
    slo = raw_run_slo(args, "sustained")
    result: dict[str, dict[str, list[dict]]] = {}
    for name, runs in sorted(raws.items()):
        if name.startswith("sustained_"):
            engine, key = name.removeprefix("sustained_").rsplit("_", 1)
            result.setdefault(engine, {})[key] = bench_runs.by_arrival(runs["run"]["requests"], slo)
    return result


def summarize(args: argparse.Namespace) -> dict:
    parts = {name: json.loads((args.out / f"{name}.json").read_text()) for name in PARTS
             if (args.out / f"{name}.json").exists()}
    presets = {PRESET_PARTS[n]: p for n, p in parts.items() if n in PRESET_PARTS}
    states = [json.loads(path.read_text()) for path in sorted([*server_files(args.out), *args.out.glob("*_stopped.json")])]
    engines = [command for state in states for command in (state.get("recipe"), state["command"]) if command]
    commands = list(dict.fromkeys([*(c for p in parts.values() for c in p.get("commands", [])), *engines]))
    gpu = next((p["gpu"] for p in parts.values()), "unknown")
    result = bench.summary(presets, parts.get("fp8-kv"), parts.get("chunked-prefill"), commands, gpu,
                           kv_checks(args, parts.get("fp8-kv")), parts.get("sustained"), expected_presets=list(PRESETS))
    result["plots"] = [preset_pareto(name, part, args.out).name for name, part in presets.items()]
    if "chunked-prefill" in parts:
        result["plots"].append(chunked_prefill(parts["chunked-prefill"], args.out).name)
    if "fp8-kv" in parts:
        result["plots"].append(router_timeline(parts["fp8-kv"], args.out).name)
    if timelines := runs_with_first_part_path(parts):
        result["plots"].append(first_part_path(timelines, args.out).name)
    raws = saved_runs(args.out)
    result["requests_by_outcome"] = bench_runs.saved_runs_by_outcome(raws, lambda name: raw_run_slo(args, name))
    if "sustained" in parts and (arrivals := sustained_by_arrival(args, raws)):
        result["sustained_by_arrival"] = arrivals
        result["plots"].append(sustained_timeline(parts["sustained"], arrivals, args.out).name)
    result["table"] = table(presets, args.out, parts.get("fp8-kv"), FP8_PRESET, result["requests_by_outcome"]).name
    (args.out / "summary.json").write_text(json.dumps(result, indent=2))
    if (args.out / "raw").exists():
        archive(args.out / "raw", args.out / "raw.tgz")
    return result


def int_list(text: str) -> list[int]:
    """A comma-separated list of integers; empty gives none."""
    return [int(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["plan", "start", "measure", "stop", "summarize"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--engine", help="vllm-<budget> | ours-fp16 | ours-fp8 (see `plan`)")
    parser.add_argument("--parts", help=f"comma-separated: {', '.join(PARTS)}")
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/models/llama3-8b"))
    parser.add_argument("--shape", default="llama3-8b", help="synthetic checkpoint made at --model-dir if missing")
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--gpu", default="H200", help="GPU the plans are made for (serve_app.memory.gpus), or cpu")
    parser.add_argument("--cpu-kv-gib", type=float, default=1.0, help="--gpu cpu: VLLM_CPU_KVCACHE_SPACE")
    parser.add_argument("--policies", default=",".join(bench.CONTROLLER_POLICIES),
                        help="controller batch-size policies compared (those the config knows)")
    parser.add_argument("--grid", type=int_list, default=list(bench.MAX_NUM_SEQS_GRID),
                        help="max_num_seqs swept at each budget beside the plans' own (empty: the plans' only)")
    parser.add_argument("--extra-budgets", type=int_list,
                        default=[bench.VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS], help="budgets beside the plans'")
    parser.add_argument("--base-url", help="measure a server already running there (no start/stop; a dry run)")
    parser.add_argument("--served-name", default=SERVED_NAME)
    parser.add_argument("--ready-timeout-s", type=float, default=540)
    parser.add_argument("--time-budget-s", type=float, default=540, help="a measure call stops before this")
    parser.add_argument("--capacity-requests", type=int, default=2048,
                        help="closed-loop capacity run's requests (its rate is taken while all clients are busy)")
    parser.add_argument("--load", type=float, default=0.9, help="open-loop rate over vLLM's defaults' capacity")
    parser.add_argument("--rate", type=float, help="open-loop rate (default: from the capacity run and the search)")
    parser.add_argument("--carry-from", type=Path,
                        help="an earlier run's DIR on the same GPU kind: each preset part takes its closed-loop "
                        "capacity, probes and vLLM's defaults' row (as a probe) from there instead of measuring them")
    parser.add_argument("--rate-probes", type=int, default=5,
                        help="most open-loop probes of vLLM's defaults (carried ones included) in the search for the "
                        "rate where they begin to miss the SLO (from --load x the closed-loop rate; 0: that figure "
                        "alone); the probe at the rate chosen is vLLM's defaults' row")
    parser.add_argument("--window-s", type=float, default=45, help="each open-loop run's arrival window")
    parser.add_argument("--sustained-s", type=float, default=120, help="sustained: each run's arrival window")
    parser.add_argument("--ours-sections", type=json.loads, default={},
                        help='start: fields set in our app\'s config sections, e.g. \'{"http": {"ingress_replicas": 2, '
                             '"stream_writes_per_s": 1000}}\' (the config file is saved beside the run)')
    parser.add_argument("--ours-preset", default=FP8_PRESET, choices=sorted(PRESETS),
                        help="start: the preset our app's controller plans for and whose SLO its one class has "
                             "(the fp8-kv and sustained parts send the mixed workload)")
    parser.add_argument("--sustained-client-cap", type=int, default=0,
                        help="sustained: most requests the load driver keeps open (0: none, open loop; run5_sustained "
                             f"ran with {bench.VLLM_DEFAULT_MAX_NUM_SEQS})")
    parser.add_argument("--sustained-loads", type=lambda text: [float(v) for v in text.split(",") if v],
                        default=[1.0, 1.12], help="sustained: offered rates as multiples of preset-mixed's")
    parser.add_argument("--decode-rate", type=float, default=4.0, help="chunked-prefill: decodes per second")
    parser.add_argument("--decode-len", type=int, default=1024, help="chunked-prefill: each decode's output tokens")
    parser.add_argument("--long-prompt-rate", type=float, default=1.0, help="chunked-prefill: long prompts per second")
    parser.add_argument("--decode-lead-s", type=float, default=5.0, help="chunked-prefill: decodes' head start")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.phase == "plan":
        print(json.dumps(show_plan(args), indent=2))
    elif args.phase == "summarize":
        print(json.dumps(summarize(args)["goals"], indent=2))
    elif args.phase == "stop":
        stop(args)
    elif args.engine is None or (args.phase == "measure" and not args.parts):
        parser.error(f"{args.phase} needs --engine" + (" and --parts" if args.phase == "measure" else ""))
    elif args.phase == "start":
        start(args)
    else:
        measure(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
