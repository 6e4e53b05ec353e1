"""GPU check for the serving path: our Ray Serve app vs `vllm serve`, same GPU, same engine settings.

Runs vLLM's own load generator (`vllm bench serve`, random dataset, 256 in / 256 out,
--ignore-eos, 512 prompts at request rate inf) against each server in turn and writes both
results plus their ratio. Goal: ours >= 0.97 x vLLM's output tokens/s.

    python benchmarks/serving_vs_vllm.py --out DIR [--only ours|vllm] [--model-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from autoscaling.bench.host import gpu_name, log
from autoscaling.bench.servers import start_server, stop_server, wait_healthy
from autoscaling.bench.vllm_bench import bench_serve_command, headline, run_bench
from autoscaling.bench.vllm_reference import (ENGINE, SERVED_NAME, ensure_checkpoint, ours_serve_command,
                                              vllm_serve_command)
from autoscaling.bench.vs_vllm_goals import THROUGHPUT_RATIO_GOAL, throughput_ratio


def run_ours(model_dir: Path, out: Path, port: int, load: dict) -> dict:
    config = {"model": {"path": str(model_dir), "served_name": SERVED_NAME},
              # vLLM's own batch defaults on both sides: this compares serving paths, not batch sizing.
              "engine": {**ENGINE, "enable_prefix_caching": True, "batch_size_policy": "vllm_default"},
              "replicas": {"num_replicas": 1, "num_gpus": 1, "num_cpus": 4},
              "http": {"host": "127.0.0.1", "port": port}}
    command = ours_serve_command(config, out / "ours_config.yaml")
    return serve_and_bench("ours", command, model_dir, out, port, load)


def run_vllm(model_dir: Path, out: Path, port: int, load: dict) -> dict:
    return serve_and_bench("vllm", vllm_serve_command(model_dir, port), model_dir, out, port, load)


def serve_and_bench(name: str, command: list[str], model_dir: Path, out: Path, port: int, load: dict) -> dict:
    """Start a server, wait for /health, run `vllm bench serve` against it, stop it."""
    server_log = out / f"{name}_server.log"
    server = start_server(command, server_log)
    try:
        ready_s = wait_healthy(f"http://127.0.0.1:{port}/health", server, 540, server_log)
        log(f"{name} healthy after {ready_s:.0f}s")
        bench = bench_serve_command(f"http://127.0.0.1:{port}", SERVED_NAME, str(model_dir), out, f"{name}.json",
                                    **load)
        result = run_bench(bench, out / f"{name}_bench.log")
    finally:
        stop_server(server)
    result["server_command"] = shlex.join(command)
    result["server_ready_s"] = ready_s
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/models/llama2-7b"))
    parser.add_argument("--shape", default="llama2-7b")
    parser.add_argument("--only", choices=["ours", "vllm"])
    parser.add_argument("--num-prompts", type=int, default=512)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    load = {"input_len": 256, "output_len": 256, "num_prompts": args.num_prompts, "request_rate": "inf"}
    ensure_checkpoint(args.model_dir, args.shape)
    results = {}
    if args.only in (None, "ours"):
        results["ours"] = run_ours(args.model_dir, args.out, 8000, load)
        log(f"ours: {json.dumps(headline(results['ours']))}")
    if args.only in (None, "vllm"):
        results["vllm"] = run_vllm(args.model_dir, args.out, 8001, load)
        log(f"vllm: {json.dumps(headline(results['vllm']))}")
    report = {"benchmark": "serving_vs_vllm", "gpu": gpu_name(), "shape": args.shape, "load": load,
              "script": "python benchmarks/serving_vs_vllm.py " + shlex.join(sys.argv[1:]),
              **{name: {"summary": headline(r), "bench_command": r["command"], "server_command": r["server_command"],
                        "server_ready_s": r["server_ready_s"]} for name, r in results.items()}}
    if len(results) == 2:
        report["output_throughput_ratio"] = throughput_ratio(results["ours"], results["vllm"])
        log(f"ours / vllm output tok/s = {report['output_throughput_ratio']:.3f} (goal >= {THROUGHPUT_RATIO_GOAL})")
    (args.out / f"serving_vs_vllm{'_' + args.only if args.only else ''}.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
