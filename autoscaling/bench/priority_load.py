"""The priority benchmark's load: two classes (a low-priority flood, a high-priority trickle), how
each server is told a request's class, our app's config for the run, the `vllm bench serve` commands
of the saturated reference and the mix, and what the mix's results add up to.

Used by benchmarks/priority_vs_vllm.py (one GPU, one server at a time) and
benchmarks/request_path_h200.py (two GPUs, both servers at once).
"""
from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import httpx

from autoscaling.bench.host import log
from autoscaling.bench.result_summaries import class_summary, throughput_vs_saturated, ttft_by_flood_phase
from autoscaling.bench.vllm_bench import bench_result, bench_serve_command
from autoscaling.bench.vllm_reference import ENGINE, SERVED_NAME

# Our config's classes, highest first; their SLOs are also the --goodput SLOs on both servers.
PRIORITY_CLASSES = [
    {"name": "high", "ttft_slo_s": 0.25, "tpot_slo_s": 0.1, "queue_deadline_s": 2.0},
    {"name": "low", "ttft_slo_s": 10.0, "tpot_slo_s": 0.2, "queue_deadline_s": 15.0},
]
MAX_NUM_SEQS = 256
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192  # vLLM's own default
# Run 1 (one ingress): high TTFT 0.5-2 s while the flood arrived, 0.14 s while it drained. Run 2
# (four): Ray Serve's single HTTP proxy then took ~7,400 SSE events/s unthrottled and stalled (its
# health check timed out), everything slower. One ingress by default (--ingress-replicas).
DEFAULT_INGRESS_REPLICAS = 1
# Ray Serve's direct ingress (config http.direct_ingress_port): each ingress replica serves HTTP on
# its own port from this one up, and the Python proxy is off the request path. Runs 6-7 (H100) set
# RAY_SERVE_ENABLE_DIRECT_INGRESS=1 on the server's command line, which chose the same port.
DIRECT_INGRESS_FIRST_PORT = 30000
SATURATED_PROMPTS = 512
BENCH_STARTUP_S = 60  # a bench process imports vLLM, loads the tokenizer and makes its prompts first


@dataclass(frozen=True)
class LoadClass:
    name: str
    vllm_priority: int  # vLLM schedules lower values first
    rate: float  # requests/s
    input_len: int
    output_len: int
    # Distinct seeds: vLLM's random prompts are a function of the seed, and with prefix caching on,
    # a class repeating another run's prompts would be served from cache.
    seed: int


def load_classes(low_rate: float, high_rate: float) -> dict[str, LoadClass]:
    return {"low": LoadClass("low", 1, low_rate, 256, 256, seed=1),
            "high": LoadClass("high", 0, high_rate, 256, 64, seed=2)}


def class_slo(name: str) -> dict:
    return next(c for c in PRIORITY_CLASSES if c["name"] == name)


def ours_classes(low_coalesce_s: float) -> list[dict]:
    """The classes as our config gives them; the low class may send its tokens in coalesced SSE events."""
    if not low_coalesce_s:
        return PRIORITY_CLASSES
    return [{**c, "stream_coalesce_s": low_coalesce_s} if c["name"] == "low" else c for c in PRIORITY_CLASSES]


@dataclass(frozen=True)
class OursOptions:
    """What a run varies in our app (the command line's --low-coalesce-s, --ingress-replicas, ...)."""

    low_coalesce_s: float = 0.0
    ingress_replicas: int = DEFAULT_INGRESS_REPLICAS
    direct_ingress: bool = False
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
    async_scheduling: str = "auto"
    freeze_gc: bool = True
    full_gc: str = "scheduled"
    front: str = "proxy"  # http.front; haproxy delivers by pull, haproxy-direct by direct (`FRONTS`)
    lower_class_prefill_tokens: int | None = None  # router.lower_class_prefill_tokens (off: None)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> OursOptions:
        return cls(low_coalesce_s=args.low_coalesce_s, ingress_replicas=args.ingress_replicas,
                   direct_ingress=args.direct_ingress, max_num_batched_tokens=args.max_num_batched_tokens,
                   async_scheduling=args.async_scheduling, freeze_gc=args.freeze_gc == "on", full_gc=args.full_gc,
                   front=getattr(args, "front", "proxy"))


FRONTS = ("proxy", "haproxy", "haproxy-direct")


def front_settings(front: str) -> dict:
    """`http` settings for a front of `FRONTS`: HAProxy mode delivers by pull, or direct (`haproxy-direct`)."""
    if front == "proxy":
        return {}
    return {"front": "haproxy", "delivery": "direct" if front == "haproxy-direct" else "pull"}


def async_scheduling_engine_arg(choice: str) -> dict:
    """vLLM's `async_scheduling` for --async-scheduling: auto leaves vLLM's own choice (on for GPUs)."""
    return {} if choice == "auto" else {"async_scheduling": choice == "on"}


def ours_config(model_dir: Path, port: int, options: OursOptions = OursOptions()) -> dict:
    return {"model": {"path": str(model_dir), "served_name": SERVED_NAME},
            # 256 sequences of 256 + 256 tokens fit the KV cache (136k tokens), so the window can start
            # at the engine's limit.
            "engine": {**ENGINE, "enable_prefix_caching": True,
                       "max_num_seqs": MAX_NUM_SEQS, "max_num_batched_tokens": options.max_num_batched_tokens,
                       "extra": async_scheduling_engine_arg(options.async_scheduling)},
            "replicas": {"num_replicas": 1, "num_gpus": 1, "num_cpus": 4},
            "priority_classes": ours_classes(options.low_coalesce_s),
            "default_priority": "low",
            "process": {"freeze_gc_after_start": options.freeze_gc, "full_gc": options.full_gc},
            **({"router": {"lower_class_prefill_tokens": options.lower_class_prefill_tokens}}
               if options.lower_class_prefill_tokens else {}),
            "http": {"host": "127.0.0.1", "port": port, "ingress_replicas": options.ingress_replicas,
                     **({"direct_ingress_port": DIRECT_INGRESS_FIRST_PORT} if options.direct_ingress else {}),
                     **front_settings(options.front)}}


def class_request_args(server: str, klass: LoadClass) -> list[str]:
    """How a request names its class: ours by name in the body and the header, vLLM by an integer."""
    if server == "ours":
        return ["--extra-body", json.dumps({"priority": klass.name}), "--header", f"x-priority={klass.name}"]
    return ["--extra-body", json.dumps({"priority": klass.vllm_priority})]


def goodput_args(klass: LoadClass) -> list[str]:
    slo = class_slo(klass.name)
    return ["--goodput", f"ttft:{slo['ttft_slo_s'] * 1000:g}", f"tpot:{slo['tpot_slo_s'] * 1000:g}"]


def class_bench_command(server: str, klass: LoadClass, base_url: str, model_dir: Path, raw: Path, *,
                        num_prompts: int, request_rate: str, seed: int, result_name: str) -> list[str]:
    # --save-detailed keeps each request's error text (429 vs 503); no ready check, so the two
    # processes of the mix start their arrivals as soon as their prompts are made.
    return bench_serve_command(base_url, SERVED_NAME, str(model_dir), raw, result_name,
                               input_len=klass.input_len, output_len=klass.output_len, num_prompts=num_prompts,
                               request_rate=request_rate, seed=seed,
                               extra=[*class_request_args(server, klass), *goodput_args(klass), "--save-detailed",
                                      "--ready-check-timeout-sec", "0", "--disable-tqdm"])


def saturated_command(server: str, classes: dict[str, LoadClass], base_url: str, model_dir: Path,
                      raw: Path) -> list[str]:
    return class_bench_command(server, classes["low"], base_url, model_dir, raw, num_prompts=SATURATED_PROMPTS,
                               request_rate="inf", seed=0, result_name=f"{server}_saturated.json")


def mix_commands(server: str, classes: dict[str, LoadClass], base_url: str, model_dir: Path, raw: Path,
                 duration_s: float) -> dict[str, list[str]]:
    return {name: class_bench_command(server, klass, base_url, model_dir, raw,
                                      num_prompts=max(1, round(klass.rate * duration_s)),
                                      request_rate=f"{klass.rate:g}", seed=klass.seed,
                                      result_name=f"{server}_mix_{name}.json")
            for name, klass in classes.items()}


def mix_section(processes: dict, reference: dict | None) -> dict:
    """Per class: the bench's figures, its command and how its process ended; then served vs saturated."""
    results = {}
    classes = {}
    for name, process in processes.items():
        result = bench_result(process.command) if process.finished_cleanly() else None
        if result is not None:
            results[name] = result
        unknown = {"num_prompts": int(process.command[process.command.index("--num-prompts") + 1]),
                   "completed": None, "failed": None}
        classes[name] = {**(class_summary(result) if result else unknown),
                         "command": shlex.join(process.command), "process": process.info()}
    section = {"classes": classes}
    if "high" in results and "low" in results:
        # The goal is about high-priority requests *under* the flood: their TTFT by flood phase.
        section["high_ttft_by_low_phase"] = ttft_by_flood_phase(results["high"], results["low"])
    if reference is not None and len(results) == len(processes):
        section.update(throughput_vs_saturated(list(results.values()), reference))
    return section


def router_stats(base_url: str, quiet: bool = False, first_part_window_s: float | None = None) -> dict | None:
    """Our router's counters, stored raw; refused_wait_max_s is the longest a refused request waited.
    `quiet`: no log lines, and None when the server did not answer (a timeline's missing point).
    `first_part_window_s`: how far back `first_part_path` reaches (the ingress's default: 10 s)."""
    params = {} if first_part_window_s is None else {"first_part_window_s": first_part_window_s}
    try:
        stats = httpx.get(f"{base_url}/v1/router/stats", params=params, timeout=10).json()
    except (httpx.HTTPError, ValueError) as error:
        return None if quiet else {"error": repr(error)}
    if quiet:
        return stats
    for name, klass in (stats.get("classes") or {}).items():
        if isinstance(klass, dict) and "refused_wait_max_s" in klass:
            log(f"router: class {name} refused_wait_max_s = {klass['refused_wait_max_s']} "
                f"(queue deadline {class_slo(name)['queue_deadline_s'] if name in ('high', 'low') else '?'} s)")
    return stats

