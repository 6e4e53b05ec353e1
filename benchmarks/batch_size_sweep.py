"""Batch-size sweep on one engine: throughput, TTFT, TPOT, request latency and KV usage for
batch sizes 1..max, with the Pareto set, the knee and the largest batch meeting an SLO.

Each batch size B runs exactly B concurrent requests (random prompt ids, --ignore-eos) on one
vLLM engine whose max_num_seqs is the largest B, so the engine's batch is B throughout.

    python benchmarks/batch_size_sweep.py --model-dir DIR [--shape llama2-7b] --out DIR
        [--batch-sizes 1,2,4,...] [--input-len 256] [--output-len 256] [--ttft-slo S] [--tpot-slo S]
        [--server vllm [--port 8002] [--raw-dir DIR]]

In-process (default) the engine is vLLM's AsyncLLM inside this script. With --server vllm it is
`vllm serve` loaded by `vllm bench serve --max-concurrency B` (autoscaling/bench/batch_sweep_server.py); the
per-batch bench JSONs and logs are then archived into OUT/batch_sweep_raw.tar.gz.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

from serve_app.memory.batch_profile import BatchProfile, SweepPoint, knee, largest_batch_meeting_slo, pareto_front
from serve_app.statistics import percentile, tpot_s


def p99(values: list[float | None]) -> float:
    """p99 of the values that exist (0 when none do: a batch of one-token outputs has no TPOT)."""
    return percentile((v for v in values if v is not None), 99) or 0.0


async def one_request(engine, request_id: str, prompt: list[int], output_len: int) -> tuple[float, float, int]:
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    params = SamplingParams(max_tokens=output_len, ignore_eos=True, temperature=0,
                            output_kind=RequestOutputKind.DELTA)
    started = time.perf_counter()
    first = None
    tokens = 0
    async for output in engine.generate({"prompt_token_ids": prompt}, params, request_id):
        if first is None:
            first = time.perf_counter() - started
        tokens += len(output.outputs[0].token_ids)
    return first or 0.0, time.perf_counter() - started, tokens


async def sweep(args: argparse.Namespace) -> BatchProfile:
    from tqdm import tqdm
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    from serve_app.config import parse_config
    from serve_app.deployments.replica import engine_args_from_config
    from serve_app.engine_stats import EngineSnapshot, snapshot_logger_factory

    config = parse_config({"model": {"path": str(args.model_dir)},
                           "engine": {"max_model_len": args.max_model_len,
                                      "gpu_memory_utilization": args.gpu_memory_utilization,
                                      "enable_prefix_caching": False}})
    sizes = sorted(int(b) for b in args.batch_sizes.split(","))
    snapshot = EngineSnapshot()
    engine = AsyncLLM.from_engine_args(engine_args_from_config(config, {"max_num_seqs": sizes[-1]}),
                                       usage_context=UsageContext.OPENAI_API_SERVER,
                                       stat_loggers=[snapshot_logger_factory(snapshot)])
    rng = random.Random(0)
    vocab = engine.vllm_config.model_config.get_vocab_size()
    prompts = lambda n: [[rng.randrange(6, vocab) for _ in range(args.input_len)] for _ in range(n)]  # noqa: E731
    points = []
    try:
        await asyncio.gather(*(one_request(engine, f"warmup-{i}", p, 8) for i, p in enumerate(prompts(2))))
        for batch in tqdm(sizes, desc="batch sizes"):
            preempted_before = snapshot.num_preemptions_total
            peak_kv = 0.0
            started = time.perf_counter()
            tasks = [asyncio.ensure_future(one_request(engine, f"b{batch}-{i}", p, args.output_len))
                     for i, p in enumerate(prompts(batch))]
            while not all(t.done() for t in tasks):
                await asyncio.sleep(0.05)
                peak_kv = max(peak_kv, snapshot.kv_cache_usage)
            results = [t.result() for t in tasks]
            wall = time.perf_counter() - started
            tpots = [tpot_s(e2e, ttft, n) for ttft, e2e, n in results]
            points.append(SweepPoint(batch, sum(n for _, _, n in results) / wall, p99([r[0] for r in results]),
                                     p99(tpots), p99([r[1] for r in results]), peak_kv,
                                     snapshot.num_preemptions_total - preempted_before))
    finally:
        engine.shutdown()
    return BatchProfile(args.shape or args.model_dir.name, device_name(), args.input_len, args.output_len,
                        tuple(points))


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def plot(profile: BatchProfile, out: Path, ttft_slo: float | None, tpot_slo: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [p.batch_size for p in profile.points]
    best = knee(profile.points)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(sizes, [p.output_tokens_per_s for p in profile.points], marker="o")
    ax.scatter([best.batch_size], [best.output_tokens_per_s], s=160, facecolors="none", edgecolors="red",
               label=f"knee (batch {best.batch_size})")
    ax.set(xscale="log", xlabel="batch size", ylabel="output tokens/s",
           title=f"{profile.model} on {profile.device}: throughput ({profile.input_len} in / {profile.output_len} out)")
    ax.set_xscale("log", base=2)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "batch_sweep_throughput.png", dpi=120)
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in (("TTFT p99", [p.ttft_p99_s for p in profile.points]),
                          ("TPOT p99", [p.tpot_p99_s for p in profile.points]),
                          ("request latency p99", [p.request_latency_p99_s for p in profile.points])):
        ax.plot(sizes, values, marker="o", label=label)
    for label, slo in (("TTFT SLO", ttft_slo), ("TPOT SLO", tpot_slo)):
        if slo:
            ax.axhline(slo, linestyle="--", label=label)
    ax.set(xlabel="batch size", ylabel="seconds", yscale="log", title=f"{profile.model}: latency against batch size")
    ax.set_xscale("log", base=2)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "batch_sweep_latency.png", dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--shape", help="make this synthetic shape at --model-dir first if it is missing")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,64,128,256")
    parser.add_argument("--input-len", type=int, default=256)
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--ttft-slo", type=float)
    parser.add_argument("--tpot-slo", type=float)
    parser.add_argument("--server", choices=["vllm"],
                        help="load a `vllm serve` process with `vllm bench serve` instead of an in-process engine")
    parser.add_argument("--port", type=int, default=8002, help="--server: the server's port")
    parser.add_argument("--raw-dir", type=Path,
                        help="--server: where the per-batch bench JSONs and logs go before archiving "
                             "(default: a new temporary folder)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.shape:
        from serve_app.synthetic_model import ensure_model

        ensure_model(args.shape, args.model_dir)
    server_details = {}
    if args.server:
        from autoscaling.bench.batch_sweep_server import sweep_over_server
        from autoscaling.bench.host import archive

        args.raw_dir = args.raw_dir or Path(tempfile.mkdtemp(prefix="batch_sweep_raw_"))
        args.raw_dir.mkdir(parents=True, exist_ok=True)
        try:
            profile, server_details = sweep_over_server(args, args.raw_dir)
        finally:
            archive(args.raw_dir, args.out / "batch_sweep_raw.tar.gz")
    else:
        profile = asyncio.run(sweep(args))
    (args.out / "batch_sweep_profile.json").write_text(profile.to_json())
    front = {p.batch_size for p in pareto_front(profile.points)}
    meeting = largest_batch_meeting_slo(profile.points, args.ttft_slo, args.tpot_slo)
    print(f"{'batch':>6} {'tok/s':>9} {'TTFT p99':>9} {'TPOT p99':>9} {'e2e p99':>8} {'KV peak':>8} {'preempt':>7} pareto")
    for p in profile.points:
        print(f"{p.batch_size:>6} {p.output_tokens_per_s:>9.0f} {p.ttft_p99_s:>9.3f} {p.tpot_p99_s:>9.4f} "
              f"{p.request_latency_p99_s:>8.2f} {p.peak_kv_cache_usage:>8.1%} {p.preemptions:>7} "
              f"{'*' if p.batch_size in front else ''}")
    summary = {"knee": knee(profile.points).batch_size, "pareto": sorted(front),
               "largest_meeting_slo": meeting.batch_size if meeting else None,
               "slo": {"ttft_p99_s": args.ttft_slo, "tpot_p99_s": args.tpot_slo},
               "command": "python benchmarks/batch_size_sweep.py " + shlex.join(sys.argv[1:]),
               **server_details}
    print(summary)
    import json

    (args.out / "batch_sweep_summary.json").write_text(json.dumps(summary, indent=2))
    plot(profile, args.out, args.ttft_slo, args.tpot_slo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
