"""Cross-check of our load driver against vLLM's own `vllm bench serve` on the same server and workload.

Runs `vllm bench serve` (random dataset, fixed input/output lengths, --ignore-eos) and then
`python -m autoscaling.loadtest run` with the same lengths, number of requests, request rate (or
max concurrency) and seed, against any OpenAI-compatible server (ours or `vllm serve`), and
compares request throughput, output token throughput and TTFT/TPOT p50/p99. Prints a table,
writes both results and the commands to OUT/loadtest_vs_vllm_bench.json, and exits 1 when a
compared metric differs by more than --tolerance (relative to vLLM's figure).

    python benchmarks/loadtest_vs_vllm_bench.py --base-url http://127.0.0.1:8000 --model M \
        --tokenizer PATH --input-len 256 --output-len 256 --num-prompts 200 --request-rate 4 --out DIR
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from autoscaling.bench.vllm_bench import VLLM_BENCH_SERVE

ROOT = Path(__file__).resolve().parent.parent  # `python -m autoscaling.loadtest` runs from here

# (name, vLLM's result key in ms or per s, our overall ClassStats path, scale to vLLM's unit)
METRICS = {
    "request_throughput": ("request_throughput", ("request_throughput_rps",), 1.0),
    "output_throughput": ("output_throughput", ("output_token_throughput_tps",), 1.0),
    "ttft_p50": ("p50_ttft_ms", ("ttft_s", "p50"), 1000.0),
    "ttft_p99": ("p99_ttft_ms", ("ttft_s", "p99"), 1000.0),
    "tpot_p50": ("p50_tpot_ms", ("tpot_s", "p50"), 1000.0),
    "tpot_p99": ("p99_tpot_ms", ("tpot_s", "p99"), 1000.0),
}


def vllm_bench_command(args: argparse.Namespace, out: Path) -> list[str]:
    """Flags common to vLLM 0.26 and the installed 0.32 (vllm/benchmarks/serve.py)."""
    command = [*VLLM_BENCH_SERVE, "--backend", "vllm",
               "--base-url", args.base_url, "--endpoint", "/v1/completions", "--model", args.model,
               "--tokenizer", args.tokenizer, "--dataset-name", "random",
               "--random-input-len", str(args.input_len), "--random-output-len", str(args.output_len),
               "--ignore-eos", "--num-prompts", str(args.num_prompts), "--seed", str(args.seed),
               "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
               "--save-result", "--result-dir", str(out), "--result-filename", "vllm_bench.json"]
    command += ["--request-rate", str(args.request_rate)]
    if args.max_concurrency:
        command += ["--max-concurrency", str(args.max_concurrency)]
    return command


def loadtest_command(args: argparse.Namespace, out: Path) -> list[str]:
    rate = "inf" if args.request_rate == float("inf") else repr(args.request_rate)
    command = [sys.executable, "-m", "autoscaling.loadtest", "run", "--base-url", args.base_url,
               "--model", args.model, "--arrival", f"poisson:{rate}", "--num-requests", str(args.num_prompts),
               "--prompt-len", f"fixed:{args.input_len}", "--output-len", f"fixed:{args.output_len}",
               "--seed", str(args.seed), "--warmup", "1", "--no-progress", "--out", str(out / "loadtest.json")]
    if args.max_concurrency:
        command += ["--max-concurrency", str(args.max_concurrency)]
    return command


def run(command: list[str], log_path: Path, timeout_s: float) -> None:
    print(f"$ {shlex.join(command)}", flush=True)
    with open(log_path, "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"command failed ({done.returncode}); log {log_path}:\n{log_path.read_text()[-3000:]}")


def compare(vllm: dict, ours: dict, names: list[str], tolerance: float) -> dict[str, dict]:
    """Per metric: vLLM's and our value (vLLM's units) and the relative difference to vLLM's."""
    rows = {}
    for name in names:
        vllm_key, path, scale = METRICS[name]
        value = ours["overall"]
        for key in path:
            value = value[key]
        ours_value = None if value is None else value * scale
        theirs = vllm.get(vllm_key)
        diff = None if ours_value is None or not theirs else (ours_value - theirs) / theirs
        rows[name] = {"vllm": theirs, "ours": ours_value, "rel_diff": diff,
                      "ok": diff is not None and abs(diff) <= tolerance}
    return rows


def table(rows: dict[str, dict], tolerance: float) -> str:
    lines = [f"{'metric':<20} {'vllm bench':>12} {'loadtest':>12} {'diff':>8}  (tolerance {tolerance:.0%})"]
    for name, row in rows.items():
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        diff = "-" if row["rel_diff"] is None else f"{row['rel_diff']:+.1%}"
        lines.append(f"{name:<20} {fmt(row['vllm']):>12} {fmt(row['ours']):>12} {diff:>8}  "
                     f"{'ok' if row['ok'] else 'DIFFERS'}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True, help="server root, no /v1")
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--tokenizer", required=True, help="tokenizer path or name (vllm bench needs one)")
    parser.add_argument("--input-len", type=int, default=256)
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--num-prompts", type=int, default=200)
    parser.add_argument("--request-rate", type=float, default=float("inf"))
    parser.add_argument("--max-concurrency", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--metrics", default=",".join(METRICS),
                        help=f"comma-separated subset of {','.join(METRICS)}")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per tool run")
    parser.add_argument("--out", required=True, help="directory for both raw results, logs and the comparison")
    args = parser.parse_args(argv)
    unknown = set(args.metrics.split(",")) - set(METRICS)
    if unknown:
        parser.error(f"--metrics: unknown {sorted(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    commands = {"vllm_bench": vllm_bench_command(args, out), "loadtest": loadtest_command(args, out)}
    run(commands["vllm_bench"], out / "vllm_bench.log", args.timeout)
    run(commands["loadtest"], out / "loadtest.log", args.timeout)
    vllm = json.loads((out / "vllm_bench.json").read_text())
    ours = json.loads((out / "loadtest.json").read_text())
    rows = compare(vllm, ours, args.metrics.split(","), args.tolerance)
    counts = {"vllm_bench": {"completed": vllm.get("completed"), "failed": vllm.get("failed")},
              "loadtest": {"completed": ours["overall"]["completed"],
                           "failed": ours["overall"]["sent"] - ours["overall"]["completed"]}}
    ok = all(row["ok"] for row in rows.values()) and counts["vllm_bench"] == counts["loadtest"]
    report = {"ok": ok, "tolerance": args.tolerance, "comparison": rows, "counts": counts,
              "commands": {k: shlex.join(v) for k, v in commands.items()},
              # vLLM's per-request lists stay in vllm_bench.json only.
              "vllm_bench": {k: v for k, v in vllm.items() if not isinstance(v, list)}, "loadtest": ours}
    (out / "loadtest_vs_vllm_bench.json").write_text(json.dumps(report, indent=2))
    print(table(rows, args.tolerance))
    print(f"completed/failed: {counts}")
    print(f"{'AGREE' if ok else 'DIFFER'}; wrote {out / 'loadtest_vs_vllm_bench.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
