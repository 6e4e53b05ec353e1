"""GPU check of issue 5: rate sweep and capacity on one replica, then two replicas through the router.

Phase `one` (one GPU): our app with one replica; (1) a rate sweep with the driver
(interactive/batch mix, 256/256 tokens) and its report; (2) the capacity model and the autoscaling
values it derives; (3) the saturated throughput of one replica (closed loop, --max-concurrency);
(4) the driver cross-checked against `vllm bench serve` on the same server and workload.
Phase `two` (two GPUs): the same app with two replicas, the same saturated load; the ratio to one
replica's throughput (goal >= 1.9x).

    python benchmarks/capacity_gpu.py --phase one --out DIR
    python benchmarks/capacity_gpu.py --phase two --out DIR     (reads DIR/saturated_1.json if there)
    python benchmarks/capacity_gpu.py --phase one --only-saturated --out DIR   (that reference alone)

Everything lands in DIR as it finishes (JSON with the exact commands, PNGs, logs).
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from autoscaling.bench.host import gpu_name, log
from autoscaling.bench.servers import running_server
from autoscaling.bench.vllm_reference import SERVED_NAME, ensure_checkpoint, ours_serve_command

PRIORITY_CLASSES = [
    {"name": "interactive", "ttft_slo_s": 1.0, "tpot_slo_s": 0.1, "queue_deadline_s": 10.0},
    {"name": "batch", "ttft_slo_s": 30.0, "tpot_slo_s": 0.5, "queue_deadline_s": 60.0},
]
ENGINE_LIMITS = {"max_num_seqs": 256, "max_num_batched_tokens": 8192}
MIX = "interactive=0.2,batch=0.8"
LENGTHS = ["--prompt-len", "fixed:256", "--output-len", "fixed:256"]
SERVER_START_TIMEOUT_S = 420


def app_config(model_dir: Path, port: int, replicas: int, num_gpus: float = 1) -> dict:
    engine = {"max_model_len": 2048, "gpu_memory_utilization": 0.9, **ENGINE_LIMITS} if num_gpus else {}
    return {"model": {"path": str(model_dir), "served_name": SERVED_NAME},
            "engine": engine,
            "replicas": {"num_replicas": replicas, "num_gpus": num_gpus, "num_cpus": 4 if num_gpus else 1},
            "priority_classes": PRIORITY_CLASSES, "default_priority": "batch",
            "http": {"host": "127.0.0.1", "port": port}}


def run(command: list[str], log_path: Path, timeout_s: float) -> float:
    log(f"run: {shlex.join(command)}")
    started = time.monotonic()
    with open(log_path, "w") as handle:
        subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout_s, check=True)
    return time.monotonic() - started


def driver(*args: str) -> list[str]:
    return [sys.executable, "-m", "autoscaling.loadtest", *args]


def saturated(base_url: str, out: Path, name: str, requests: int, concurrency: int) -> dict:
    path = out / f"{name}.json"
    run(driver("run", "--base-url", base_url, "--model", SERVED_NAME, "--arrival", "poisson:1000",
               "--num-requests", str(requests), "--max-concurrency", str(concurrency), "--mix", "batch=1",
               *LENGTHS, "--warmup", "4", "--no-progress", "--out", str(path)), out / f"{name}.log", 420)
    result = json.loads(path.read_text())
    overall = result["overall"]
    log(f"{name}: {overall['output_token_throughput_tps']:.0f} output tok/s, {overall['completed']} completed, "
        f"{overall['failed']} failed, {overall['refused_429'] + overall['refused_503']} refused")
    return result


def phase_one(args: argparse.Namespace, base_url: str, config_path: Path, summary: dict, save) -> None:
    """Most important first: a run cut off at the time limit keeps what it finished."""
    out = args.out
    if args.only_saturated:  # the one-replica reference for phase two on a machine without phase one
        summary["saturated_1"] = saturated(base_url, out, "saturated_1", args.saturated_requests,
                                           args.concurrency)["overall"]
        save()
        return
    sweep = driver("sweep", "--base-url", base_url, "--model", SERVED_NAME, "--rates", args.rates,
                   "--duration", str(args.duration_s), "--mix", MIX, *LENGTHS, "--slo-from-config", str(config_path),
                   "--no-progress", "--out", str(out / "sweep.json"), "--report-dir", str(out / "report"))
    run(sweep, out / "sweep.log", 560)
    summary["sweep"] = {"command": shlex.join(sweep), "json": "sweep.json", "report": "report/"}
    save()
    autoscale = [sys.executable, "-m", "serve_app.cli", "autoscale", "--sweep", str(out / "sweep.json"),
                 "--slo-class", "interactive", "--peak-rps", str(args.peak_rps)]
    result = subprocess.run(autoscale, capture_output=True, text=True, timeout=120)
    (out / "autoscale.txt").write_text(result.stdout + result.stderr)
    summary["autoscale"] = {"command": shlex.join(autoscale), "output": result.stdout[-4000:], "exit": result.returncode}
    save()
    summary["saturated_1"] = saturated(base_url, out, "saturated_1", args.saturated_requests, args.concurrency)["overall"]
    save()
    cross = [sys.executable, "benchmarks/loadtest_vs_vllm_bench.py", "--base-url", base_url, "--model", SERVED_NAME,
             "--tokenizer", str(args.model_dir), "--input-len", "256", "--output-len", "256",
             "--num-prompts", str(args.cross_prompts), "--max-concurrency", str(args.cross_concurrency),
             "--out", str(out / "cross_check")]
    try:
        run(cross, out / "cross_check.log", 300)
        summary["cross_check"] = {"command": shlex.join(cross), "within_tolerance": True}
    except subprocess.CalledProcessError as error:
        summary["cross_check"] = {"command": shlex.join(cross), "within_tolerance": False, "exit": error.returncode}
    save()


def phase_two(args: argparse.Namespace, base_url: str, summary: dict, save) -> None:
    out = args.out
    two = saturated(base_url, out, "saturated_2", 2 * args.saturated_requests, 2 * args.concurrency)["overall"]
    summary["saturated_2"] = two
    one_path = out / "saturated_1.json"
    if one_path.exists():
        one = json.loads(one_path.read_text())["overall"]
        summary["two_replica_speedup"] = two["output_token_throughput_tps"] / one["output_token_throughput_tps"]
        log(f"two replicas / one: {summary['two_replica_speedup']:.2f}x (goal >= 1.9x)")
    save()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=["one", "two"], required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/models/llama2-7b"))
    parser.add_argument("--shape", default="llama2-7b")
    parser.add_argument("--rates", default="8,16,24,32,40", help="sweep arrival rates, req/s")
    parser.add_argument("--duration-s", type=float, default=20)
    # Closed loop at a fixed concurrency: both tools then see the same steady state, where open-loop
    # Poisson arrivals from two different random streams would differ in their tails.
    parser.add_argument("--cross-concurrency", type=int, default=32)
    parser.add_argument("--cross-prompts", type=int, default=192)
    parser.add_argument("--peak-rps", type=float, default=200, help="peak load the derived autoscaling must serve")
    parser.add_argument("--saturated-requests", type=int, default=768)
    parser.add_argument("--concurrency", type=int, default=384, help="per replica, closed loop")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--only-saturated", action="store_true",
                        help="phase one: only the saturated one-replica run (phase two's reference)")
    parser.add_argument("--num-gpus", type=float, default=1, help="0: a CPU smoke run of this script (tiny shape)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ensure_checkpoint(args.model_dir, args.shape)
    replicas = 1 if args.phase == "one" else 2
    config_path = args.out / f"config_{replicas}.yaml"
    server = ours_serve_command(app_config(args.model_dir, args.port, replicas, args.num_gpus), config_path)
    summary_path = args.out / f"capacity_phase_{args.phase}.json"
    summary = {"benchmark": "capacity_gpu", "phase": args.phase, "gpu": gpu_name(), "shape": args.shape,
               "script": "python benchmarks/capacity_gpu.py " + shlex.join(sys.argv[1:]),
               "config": app_config(args.model_dir, args.port, replicas, args.num_gpus)}

    def save() -> None:
        summary_path.write_text(json.dumps(summary, indent=2))

    base_url = f"http://127.0.0.1:{args.port}"
    with running_server(server, args.out / f"server_{replicas}.log", f"{base_url}/health",
                        SERVER_START_TIMEOUT_S) as ready_s:
        summary["server_ready_s"] = ready_s
        log(f"app with {replicas} replica(s) healthy in {ready_s:.0f}s")
        if replicas == 2:  # /health answers when one engine is up; wait until the router routes to both
            import httpx
            deadline = time.monotonic() + SERVER_START_TIMEOUT_S
            while len(httpx.get(f"{base_url}/v1/router/stats", timeout=30).json()["replicas"]) < 2:
                if time.monotonic() > deadline:
                    raise TimeoutError("second replica never became routable")
                time.sleep(2)
        save()
        if args.phase == "one":
            phase_one(args, base_url, config_path, summary, save)
        else:
            phase_two(args, base_url, summary, save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
