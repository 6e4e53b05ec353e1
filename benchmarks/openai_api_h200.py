"""GPU report for the OpenAI surface (two GPUs of one host): our app on GPU 0 and `vllm serve` on
GPU 1, same checkpoint, same engine and server options, measured in the same minutes.

1. The differential test's matrix (serve_app/fidelity_matrix.py), one request at a time to each.
2. Saturated throughput: `vllm bench serve` (random 256 in / 256 out, --ignore-eos, request rate
   inf) against both at once. Goal: ours >= 0.97 x vllm serve's output tok/s.

Two phases, so that the engines' start (minutes) and the measuring each fit one device call:

    python benchmarks/openai_api_h200.py start --out DIR      # starts both servers and returns
    python benchmarks/openai_api_h200.py measure --out DIR    # waits for them, measures, stops them

`measure --request-rate 2 --num-prompts 120` measures latency at a low rate instead (no matrix):
TTFT / TPOT of ours against `vllm serve`'s, through Ray Serve's HTTP proxy (the multi-node path).

Writes DIR/report.json (the matrix), DIR/ours.json and DIR/vllm.json (vllm bench serve), DIR/summary.json.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from autoscaling.bench.fidelity_summary import fidelity_summary
from autoscaling.bench.host import gpu_name, log
from autoscaling.bench.servers import DetachedServer, start_server, stop_detached, wait_healthy
from autoscaling.bench.vllm_bench import bench_result, bench_serve_command, start_bench
from autoscaling.bench.vllm_reference import (ENGINE, SERVED_NAME, ensure_checkpoint, ours_serve_command,
                                              vllm_serve_command)
from autoscaling.bench.vs_vllm_goals import latency_goals, throughput_goal
from serve_app.fidelity import request_matrix, run_matrix

OURS_PORT, VLLM_PORT = 8000, 8001
# The same server options on both sides (the synthetic tokenizer has no tool tokens: pythonic needs none).
FRONTEND = {"tool_call_parser": "pythonic", "enable_auto_tool_choice": True}
FRONTEND_FLAGS = ["--tool-call-parser", "pythonic", "--enable-auto-tool-choice"]
LOAD = {"input_len": 256, "output_len": 256, "num_prompts": 1024, "request_rate": "inf"}


def ours_command(model_dir: Path, out: Path) -> list[str]:
    config = {"model": {"path": str(model_dir), "served_name": SERVED_NAME},
              # vLLM's own batch defaults on both sides: this compares serving paths, not batch sizing.
              "engine": {**ENGINE, "enable_prefix_caching": True, "batch_size_policy": "vllm_default",
                         "frontend": FRONTEND},
              "replicas": {"num_replicas": 1, "num_gpus": 1, "num_cpus": 4},
              "http": {"host": "127.0.0.1", "port": OURS_PORT},
              # This measures the serving path, not admission: a class whose deadline no request of the
              # burst reaches (the default class's 10 s refuses most of a 1,024-request burst at once,
              # which `vllm serve` queues for up to 25 s).
              "priority_classes": [{"name": "bench", "ttft_slo_s": 30, "tpot_slo_s": 1, "queue_deadline_s": 300}],
              "default_priority": "bench"}
    return ours_serve_command(config, out / "ours_config.yaml")


def start(args: argparse.Namespace) -> int:
    ensure_checkpoint(args.model_dir, args.shape)
    commands = {"ours": (ours_command(args.model_dir, args.out), "0"),
                "vllm": (vllm_serve_command(args.model_dir, VLLM_PORT, FRONTEND_FLAGS), "1")}
    state = {}
    for name, (command, gpu) in commands.items():
        server = start_server(command, args.out / f"{name}_server.log", env={"CUDA_VISIBLE_DEVICES": gpu})
        state[name] = {"pid": server.pid, "command": shlex.join(command), "gpu": gpu, "started": time.time()}
    (args.out / "servers.json").write_text(json.dumps(state, indent=2))
    log(f"started {list(state)}; run `measure` next")
    return 0


def measure(args: argparse.Namespace) -> int:
    state = json.loads((args.out / "servers.json").read_text())
    urls = {"ours": f"http://127.0.0.1:{OURS_PORT}", "vllm": f"http://127.0.0.1:{VLLM_PORT}"}
    try:
        for name, server in state.items():
            ready = wait_healthy(f"{urls[name]}/health", DetachedServer(server["pid"]), args.ready_timeout_s,
                                 args.out / f"{name}_server.log")
            server["healthy_after_s"] = time.time() - server["started"]
            log(f"{name} healthy ({ready:.0f}s in this call, {server['healthy_after_s']:.0f}s since start)")

        report = None
        if args.request_rate == "inf":
            report = run_matrix(urls["ours"], urls["vllm"], request_matrix(SERVED_NAME), timeout_s=120)
            print(report.format_table(), flush=True)
            (args.out / "report.json").write_text(report.to_json())

        load = {**LOAD, "request_rate": args.request_rate, "num_prompts": args.num_prompts}
        benches = {name: bench_serve_command(url, SERVED_NAME, str(args.model_dir), args.out, f"{name}.json", **load)
                   for name, url in urls.items()}
        running = {name: start_bench(command, args.out / f"{name}_bench.log") for name, command in benches.items()}
        for name, process in running.items():
            if process.wait(timeout=args.bench_timeout_s) != 0:
                raise RuntimeError(f"vllm bench serve against {name} failed: see {name}_bench.log")
        results = {name: bench_result(command) for name, command in benches.items()}
    finally:
        for server in state.values():
            stop_detached(server["pid"])

    script = (f"python benchmarks/openai_api_h200.py {{start,measure}} --out {args.out} --model-dir {args.model_dir}"
              f" --request-rate {args.request_rate} --num-prompts {args.num_prompts}")
    summary = {"gpu": gpu_name(), "commands": [script], "goals": []} if report is None else \
        fidelity_summary(report, script, gpu_name())
    summary["commands"] += [server["command"] for server in state.values()] + [r["command"] for r in results.values()]
    summary["goals"] += ([throughput_goal(" (same host, GPU 0 / GPU 1, at once)", results["ours"], results["vllm"])]
                         if report is not None else latency_goals("low rate", results["ours"], results["vllm"]))
    summary["measured"] = {name: {key: r.get(key) for key in ("output_throughput", "request_throughput",
                                                               "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms",
                                                               "p99_tpot_ms")}
                             for name, r in results.items()}
    summary["servers_healthy_after_s"] = {name: round(s["healthy_after_s"], 1) for name, s in state.items()}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(json.dumps(summary["goals"], indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["start", "measure"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/models/llama2-7b"))
    parser.add_argument("--shape", default="llama2-7b")
    parser.add_argument("--ready-timeout-s", type=float, default=400)
    parser.add_argument("--bench-timeout-s", type=float, default=240)
    parser.add_argument("--request-rate", default="inf", help="inf: the matrix and saturated throughput")
    parser.add_argument("--num-prompts", type=int, default=LOAD["num_prompts"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    return start(args) if args.phase == "start" else measure(args)


if __name__ == "__main__":
    sys.exit(main())
