"""Issue 20: how long one LLM replica takes to become healthy on a GPU, and where the time goes.

    run --out DIR --scenarios cold,warm   starts the app once per scenario, one after the other, and
                                          writes DIR/start_<scenario>.json (+ the server's log)
    summarize --out DIR                   DIR/summary.json from every start_*.json there

Scenarios (the model: synthetic Llama-2-7B AWQ, 2,048 context, one H200). Every start first removes the
compile caches' default places under $HOME and /tmp, so only `engine.compile_cache_dir` (DIR/compile_cache,
what a shared volume gives a new pod) can make a start warm; what a start leaves outside it is recorded.
    cold        an empty compile cache directory: Dynamo, Inductor, FlashInfer/Triton JIT and CUDA graphs from scratch
    warm        the same directory again
    eager       `engine.enforce_eager`: no compilation and no CUDA graphs (a slower decode, measured elsewhere)
    warm_fewer_graphs  warm, and CUDA graphs captured for 13 batch sizes instead of vLLM's default list
    warm_spawn  warm, the engine process spawned as vLLM does in Ray actors (`replicas.engine_process_start`)
    warm_preload_more  warm, the engine fork server also importing the worker and model modules
Each start is timed from the process start (`llmserve run`: local Ray, Serve, controller, replica) to
`/health` 200 and one completion answered; vLLM's own phase lines are read from the log.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import httpx

from autoscaling.bench.host import gpu_name, log
from autoscaling.bench.servers import release_gpu, start_server, stop_server, wait_healthy
from autoscaling.bench.start_phases import start_phases
from autoscaling.bench.vllm_reference import ENGINE, SERVED_NAME, ensure_checkpoint, ours_serve_command
from serve_app.engine_preload import EXTRA_ENV as PRELOAD_EXTRA_ENV

PORT = 8000
WARM_START_GOAL_S = 60.0
MORE_ENGINE_MODULES = ("vllm.v1.worker.gpu_worker", "vllm.model_executor.model_loader",
                       "vllm.model_executor.models.llama")
FEWER_CAPTURE_SIZES = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256]
SCENARIOS = {
    "cold": {"fresh_cache": True, "engine": {}},
    "warm": {"fresh_cache": False, "engine": {}},
    "eager": {"fresh_cache": False, "engine": {"enforce_eager": True}},
    "warm_fewer_graphs": {"fresh_cache": False,
                          "engine": {"extra": {"compilation_config": {"cudagraph_capture_sizes": FEWER_CAPTURE_SIZES}}}},
    # The engine process spawned (a fresh interpreter importing torch and vLLM after the replica did), as
    # vLLM does inside Ray actors, instead of forked from the fork server that imported them meanwhile.
    "warm_spawn": {"fresh_cache": False, "engine": {}, "replicas": {"engine_process_start": "spawn"}},
    # The fork server also imports the engine's worker and model-loading modules.
    "warm_preload_more": {"fresh_cache": False, "engine": {},
                          "replicas": {"env": {PRELOAD_EXTRA_ENV: ",".join(MORE_ENGINE_MODULES)}}},
}


def app_config(model_dir: Path, engine: dict, replicas: dict | None = None) -> dict:
    return {"model": {"path": str(model_dir), "served_name": SERVED_NAME},
            "engine": {**ENGINE, **engine},
            "replicas": {"num_replicas": 1, "num_gpus": 1, "num_cpus": 4, **(replicas or {})},
            "http": {"host": "127.0.0.1", "port": PORT}}


def first_completion_s(base_url: str) -> float:
    started = time.monotonic()
    response = httpx.post(f"{base_url}/v1/completions", timeout=120,
                          json={"model": SERVED_NAME, "prompt": "Hello", "max_tokens": 16, "ignore_eos": True})
    response.raise_for_status()
    return time.monotonic() - started


def default_cache_places() -> list[Path]:
    """Where vLLM, FlashInfer, Triton and Inductor put their caches when not told otherwise."""
    home = Path.home()
    return [home / ".cache" / "vllm", home / ".cache" / "flashinfer", home / ".triton",
            *Path("/tmp").glob("torchinductor_*")]


def megabytes(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1) if path.exists() else 0.0


def one_start(name: str, args: argparse.Namespace) -> dict:
    scenario = SCENARIOS[name]
    cache = args.out / "compile_cache"
    if scenario["fresh_cache"] and cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    for place in default_cache_places():
        shutil.rmtree(place, ignore_errors=True)
    engine = {**scenario["engine"], "compile_cache_dir": str(cache)}
    command = ours_serve_command(app_config(args.model_dir, engine, scenario.get("replicas")),
                                 args.out / f"config_{name}.yaml")
    log_path = args.out / f"server_{name}.log"
    started = time.monotonic()
    server = start_server(command, log_path, env={"CUDA_VISIBLE_DEVICES": "0"})
    try:
        healthy_s = wait_healthy(f"http://127.0.0.1:{PORT}/health", server, args.timeout_s, log_path)
        first_s = first_completion_s(f"http://127.0.0.1:{PORT}")
    finally:
        stop_server(server)
        release_gpu()
    result = {"scenario": name, "command": shlex.join(command), "engine": engine,
              "replicas": scenario.get("replicas", {}), "healthy_s": round(healthy_s, 1),
              "compile_cache_mb": {p.name: megabytes(p) for p in sorted(cache.iterdir())},
              "left_outside_cache_mb": {str(p): megabytes(p) for p in default_cache_places() if p.exists()},
              "first_completion_s": round(first_s, 2), "wall_s": round(time.monotonic() - started, 1),
              "phases": start_phases(log_path.read_text(errors="replace"))}
    log(f"{name}: healthy after {healthy_s:.1f}s; phases {result['phases']}")
    return result


def run(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    ensure_checkpoint(args.model_dir, "llama2-7b")
    for name in args.scenarios.split(","):
        result = one_start(name, args)
        result["recipe"] = shlex.join([sys.executable, *sys.argv])
        (args.out / f"start_{name}.json").write_text(json.dumps(result, indent=2))
    return 0


def summarize(args: argparse.Namespace) -> int:
    """Every start_*.json in DIR and one level below (repeats: `<folder>/<scenario>`)."""
    starts = {}
    for path in sorted([*args.out.glob("start_*.json"), *args.out.glob("*/start_*.json")]):
        if path.parent.name.startswith("history"):  # an earlier version of the code, kept for comparison
            continue
        start = json.loads(path.read_text())
        folder = path.parent.relative_to(args.out)
        starts[start["scenario"] if folder == Path(".") else f"{folder}/{start['scenario']}"] = start
    # The same cache directory again (a shared volume mounted at one path); a cache copied elsewhere is
    # reported beside them, not counted as warm.
    warm = [s["phases"].get("replica_added_to_ready_s") for name, s in starts.items()
            if s["scenario"] == "warm" and not name.startswith("cache_moved/")]
    cold = starts.get("cold")
    goals = [
        {"name": "a replica with warm caches ready within 60 s (Serve adds the replica -> application ready), "
                 "every warm start",
         "measured": warm, "goal": f"<= {WARM_START_GOAL_S:g} s each",
         "met": bool(warm) and all(w is not None and w <= WARM_START_GOAL_S for w in warm)},
        {"name": "cold start reported", "measured": cold and cold["phases"].get("replica_added_to_ready_s"),
         "goal": "reported", "met": bool(cold)},
    ]
    summary = {"gpu": gpu_name() if args.gpu is None else args.gpu,
               "commands": sorted({s["recipe"] for s in starts.values()} | {s["command"] for s in starts.values()}),
               "starts": {name: {k: s.get(k) for k in ("healthy_s", "first_completion_s", "engine", "phases",
                                                       "compile_cache_mb", "left_outside_cache_mb")}
                          for name, s in starts.items()},
               "goals": goals}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["run", "summarize"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/llama2-7b-awq"))
    parser.add_argument("--scenarios", default="cold,warm", help=f"comma-separated, of {', '.join(SCENARIOS)}")
    parser.add_argument("--timeout-s", type=float, default=420)
    parser.add_argument("--gpu", help="the GPU's name for summary.json (default: nvidia-smi's)")
    args = parser.parse_args()
    return run(args) if args.phase == "run" else summarize(args)


if __name__ == "__main__":
    sys.exit(main())
