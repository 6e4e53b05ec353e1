"""Issue 19: speculative decoding (n-gram) on one H200 with the synthetic Llama-2-7B AWQ - greedy outputs
with and without it, its acceptance rate, and TPOT p50/p99 under the same light load.

    run --out DIR [--modes plain,ngram]   per mode: start our app, greedy completions of fixed prompts
                                          (temperature 0), then `vllm bench serve` (random 256 in / 256 out,
                                          Poisson --request-rate), drafted/accepted tokens read from the
                                          replica's Prometheus counters around the bench; DIR/run_<mode>.json
    summarize --out DIR                   DIR/summary.json: same outputs (goal: all identical), acceptance
                                          rate and TPOT reported (goal: reported, whatever they are)

The checkpoint has random weights: n-gram drafts are accepted only where its output repeats what came
before, so expect a low acceptance rate and little or no TPOT gain. The load is vLLM's random dataset as in
the other benchmarks, not a repetitive one chosen to flatter speculation.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import httpx

from autoscaling.bench.host import gpu_name, log
from autoscaling.bench.prometheus_metrics import fetch_metrics_text, metric_samples
from autoscaling.bench.servers import release_gpu, start_server, stop_server, wait_healthy
from autoscaling.bench.speculative_summary import NGRAM, PLAIN, summarize
from autoscaling.bench.vllm_bench import bench_serve_command, headline, run_bench
from autoscaling.bench.vllm_reference import ENGINE, SERVED_NAME, ensure_checkpoint, ours_serve_command

PORT, METRICS_PORT = 8000, 8090
SPECULATIVE = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4}
MODES = {PLAIN: {}, NGRAM: {"speculative": SPECULATIVE}}
GREEDY_MAX_TOKENS = 64
# Fixed prompts of the synthetic tokenizer's words: three repeat themselves (n-gram lookup has something to
# match from the first step), one does not.
GREEDY_PROMPTS = (
    " ".join(f"t{100 + i % 5}" for i in range(40)),
    " ".join(f"t{1000 + 7 * (i % 9)}" for i in range(60)),
    "t42 t43 t44 " * 10,
    " ".join(f"t{(37 * i) % 31000 + 10}" for i in range(50)),
)
DRAFTED, ACCEPTED = ("ray_llmserve_replica_spec_drafted_tokens_total", "ray_llmserve_replica_spec_accepted_tokens_total")


def app_config(model_dir: Path, mode: str) -> dict:
    return {"model": {"path": str(model_dir), "served_name": SERVED_NAME},
            "engine": {**ENGINE, **MODES[mode]},
            "replicas": {"num_replicas": 1, "num_gpus": 1, "num_cpus": 4},
            "http": {"host": "127.0.0.1", "port": PORT},
            "telemetry": {"metrics_export_port": METRICS_PORT}}


def greedy_texts(base_url: str) -> dict[str, str]:
    texts = {}
    for prompt in GREEDY_PROMPTS:  # one at a time: the same batch shape on both servers
        response = httpx.post(f"{base_url}/v1/completions", timeout=300, json={
            "model": SERVED_NAME, "prompt": prompt, "max_tokens": GREEDY_MAX_TOKENS, "temperature": 0,
            "ignore_eos": True, "skip_special_tokens": False})
        response.raise_for_status()
        texts[prompt] = response.json()["choices"][0]["text"]
    return texts


def spec_counters(settle_s: float = 60) -> dict[str, int] | None:
    """The replica's cumulative drafted/accepted tokens once Ray's metric export stops moving (each process
    exports on its own timer); None when the replica exports none (no speculation, or none drafted yet)."""
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    deadline, last = time.monotonic() + settle_s, None
    while True:
        text = fetch_metrics_text(url) or ""
        drafted, accepted = metric_samples(text, DRAFTED), metric_samples(text, ACCEPTED)
        now = {"drafted": int(sum(drafted)), "accepted": int(sum(accepted))} if drafted else None
        if (now is not None and now == last) or time.monotonic() > deadline:
            return now
        last = now
        time.sleep(6)


def speculation_warnings(server_log: Path) -> list[str]:
    """vLLM's own warnings about what speculation turns off (async scheduling, its V2 model runner): the
    likely cause of a TPOT cost where nothing is drafted."""
    lines = server_log.read_text(errors="replace").splitlines() if server_log.exists() else []
    found = {line.split("] ", 1)[-1].strip() for line in lines
             if "WARNING" in line and ("specul" in line.lower() or "ngram" in line.lower())}
    return sorted(found)


def one_mode(mode: str, args: argparse.Namespace) -> dict:
    command = ours_serve_command(app_config(args.model_dir, mode), args.out / f"config_{mode}.yaml")
    server_log = args.out / f"server_{mode}.log"
    server = start_server(command, server_log)
    base_url = f"http://127.0.0.1:{PORT}"
    try:
        ready_s = wait_healthy(f"{base_url}/health", server, args.timeout_s, server_log)
        log(f"{mode}: healthy after {ready_s:.0f}s")
        texts = greedy_texts(base_url)
        before = spec_counters() if mode == NGRAM else None  # the greedy prompts' drafts (since start)
        bench = bench_serve_command(base_url, SERVED_NAME, str(args.model_dir), args.out, f"bench_{mode}.json",
                                    input_len=256, output_len=256, num_prompts=args.num_prompts,
                                    request_rate=args.request_rate)
        result = run_bench(bench, args.out / f"bench_{mode}.log", timeout_s=600)
        after = spec_counters() if mode == NGRAM else None
    finally:
        stop_server(server)
        release_gpu()
    spec = None
    if after is not None:
        start = before or {"drafted": 0, "accepted": 0}
        spec = {key: after[key] - start[key] for key in ("drafted", "accepted")}
    bench_figures = {**headline(result), **{k: result.get(k) for k in ("median_tpot_ms", "p50_tpot_ms")}}
    return {"mode": mode, "server_ready_s": ready_s, "texts": texts, "bench": bench_figures, "spec": spec,
            "spec_greedy": before, "engine_warnings": speculation_warnings(server_log),
            "server_command": shlex.join(command), "bench_command": result["command"],
            "recipe": shlex.join([sys.executable, *sys.argv])}


def run(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    ensure_checkpoint(args.model_dir, "llama2-7b")
    for mode in args.modes.split(","):
        result = one_mode(mode, args)
        (args.out / f"run_{mode}.json").write_text(json.dumps(result, indent=2))
        log(f"{mode}: TPOT p50 {result['bench'].get('median_tpot_ms')} ms, spec {result['spec']}")
    return 0


def write_summary(args: argparse.Namespace) -> int:
    runs = {json.loads(p.read_text())["mode"]: json.loads(p.read_text()) for p in sorted(args.out.glob("run_*.json"))}
    summary = summarize(runs, gpu_name() if args.gpu is None else args.gpu)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["goals"], indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["run", "summarize"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/llama2-7b-awq"))
    parser.add_argument("--modes", default=f"{PLAIN},{NGRAM}", help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--request-rate", default="1", help="Poisson arrivals per second (light load: TPOT is "
                        "where speculation acts)")
    parser.add_argument("--timeout-s", type=float, default=420)
    parser.add_argument("--gpu", help="the GPU's name for summary.json (default: nvidia-smi's)")
    args = parser.parse_args()
    return run(args) if args.phase == "run" else write_summary(args)


if __name__ == "__main__":
    sys.exit(main())
