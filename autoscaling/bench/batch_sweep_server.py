"""The batch-size sweep over `vllm serve` + `vllm bench serve` (benchmarks/batch_size_sweep.py --server vllm).

One server whose max_num_seqs is the largest batch; for each batch size B one benchmark at
--max-concurrency B, request rate inf, max(2B, 8) prompts, so the engine's batch is B throughout.
While it runs, /metrics (KV cache usage) and nvidia-smi (GPU memory used) are polled every 0.2 s.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from tqdm import tqdm

from autoscaling.bench.host import gpu_name, log, read_gpu_memory_used_mib
from autoscaling.bench.prometheus_metrics import fetch_metrics_text, kv_cache_usage, preemptions_total
from autoscaling.bench.result_summaries import prompts_for_batch, sweep_point
from autoscaling.bench.samplers import PeakSampler
from autoscaling.bench.servers import running_server
from autoscaling.bench.vllm_bench import bench_serve_command, run_bench
from serve_app.memory.batch_profile import BatchProfile

BENCH_TIMEOUT_S = 240  # the largest batch runs ~20 s on an H100; a bench past this has hung
SERVER_START_TIMEOUT_S = 400


def vllm_serve_command(args: argparse.Namespace, served_name: str, max_num_seqs: int) -> list[str]:
    return [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(args.model_dir),
            "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(args.port),
            "--max-num-seqs", str(max_num_seqs), "--max-model-len", str(args.max_model_len),
            "--gpu-memory-utilization", str(args.gpu_memory_utilization), "--dtype", "float16",
            # Every batch size reuses seed 0's prompts: a prefix cache would skip their prefill.
            "--no-enable-prefix-caching", "--max-num-batched-tokens", "8192"]


def batch_bench_command(args: argparse.Namespace, served_name: str, raw: Path, batch: int,
                        num_prompts: int | None = None, output_len: int | None = None,
                        name: str | None = None) -> list[str]:
    return bench_serve_command(f"http://127.0.0.1:{args.port}", served_name, str(args.model_dir), raw,
                               name or f"batch_{batch}.json", input_len=args.input_len,
                               output_len=output_len or args.output_len,
                               num_prompts=num_prompts or prompts_for_batch(batch), request_rate="inf",
                               extra=["--max-concurrency", str(batch), "--disable-tqdm"])


def sweep_over_server(args: argparse.Namespace, raw: Path) -> tuple[BatchProfile, dict]:
    """The profile, and what the summary JSON records beside it (commands, GPU memory peaks)."""
    sizes = sorted(int(b) for b in args.batch_sizes.split(","))
    served_name = args.shape or args.model_dir.name
    metrics_url = f"http://127.0.0.1:{args.port}/metrics"
    server = vllm_serve_command(args, served_name, sizes[-1])
    details: dict = {"server": "vllm", "server_command": shlex.join(server), "bench_commands": {},
                     "peak_gpu_memory_used_mib": {}, "failed_batches": {}}
    points = []
    with running_server(server, raw / "server.log", f"http://127.0.0.1:{args.port}/health",
                        SERVER_START_TIMEOUT_S) as ready_s:
        details["server_ready_s"] = ready_s
        log(f"vllm serve healthy after {ready_s:.0f}s")
        # Short requests at the largest batch first, so first-call costs stay out of batch 1's figures.
        warmup = batch_bench_command(args, served_name, raw, sizes[-1], num_prompts=sizes[-1], output_len=16,
                                     name="warmup.json")
        run_bench(warmup, raw / "warmup.log", BENCH_TIMEOUT_S)
        details["warmup_command"] = shlex.join(warmup)
        for batch in tqdm(sizes, desc="batch sizes"):
            command = batch_bench_command(args, served_name, raw, batch)
            details["bench_commands"][str(batch)] = shlex.join(command)
            preempted_before = preemptions_total(fetch_metrics_text(metrics_url) or "") or 0
            kv = PeakSampler(lambda: kv_cache_usage(fetch_metrics_text(metrics_url) or ""))
            gpu_memory = PeakSampler(read_gpu_memory_used_mib)
            try:
                with kv, gpu_memory:
                    result = run_bench(command, raw / f"batch_{batch}.log", BENCH_TIMEOUT_S)
            except Exception as error:  # one bad batch size should not lose the others
                details["failed_batches"][str(batch)] = repr(error)
                log(f"batch {batch}: bench failed: {error!r}")
                continue
            preempted = (preemptions_total(fetch_metrics_text(metrics_url) or "") or 0) - preempted_before
            points.append(sweep_point(batch, result, kv.peak or 0.0, preempted))
            details["peak_gpu_memory_used_mib"][str(batch)] = gpu_memory.peak
            log(f"batch {batch}: {result['output_throughput']:.0f} output tok/s, KV peak {kv.peak}, "
                f"GPU memory peak {gpu_memory.peak} MiB, preemptions {preempted}")
    if not points:
        raise RuntimeError(f"every batch size failed: {details['failed_batches']}")
    device = gpu_name().split(",")[0]
    return BatchProfile(served_name, device, args.input_len, args.output_len, tuple(points)), details
