"""GPU check of the priority router: a low-priority flood plus a trickle of high-priority requests,
against our app and against `vllm serve --scheduling-policy priority`, same GPU and engine settings.

Per server: (1) a saturated reference: low class only, request rate inf, 512 prompts 256 in / 256
out; (2) the mix: two `vllm bench serve` processes at once for --duration-s, low at --low-rate
(256/256, about twice what the engine serves) and high at --high-rate (256/64), --ignore-eos. The
class travels in the body (ours: "priority": "high"|"low" plus the x-priority header; vLLM: the
integer `priority`, lower served first). Goals: high-priority p99 TTFT <= 250 ms; low-priority
served or refused (429/503), none hanging; mix output tok/s >= 0.9 x the saturated reference.

    python benchmarks/priority_vs_vllm.py --out DIR --only ours      (one GPU call per server)
    python benchmarks/priority_vs_vllm.py --out DIR --only vllm
    python benchmarks/priority_vs_vllm.py --out DIR --merge A/priority_vs_vllm_ours.json B/priority_vs_vllm_vllm.json
    python benchmarks/priority_vs_vllm.py --out DIR                  (both servers, then the merge)

A run writes OUT/priority_vs_vllm_<server>.json (after each step, so a cut-off run keeps what it
did) and OUT/priority_vs_vllm_<server>_raw.tar.gz (bench JSONs with per-request detail, logs);
the merge writes OUT/priority_vs_vllm.json, priority_ttft.png and priority_throughput.png.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from autoscaling.bench.concurrent_benches import run_concurrently
from autoscaling.bench.host import archive, gpu_name, log
from autoscaling.bench.priority_load import (BENCH_STARTUP_S, DEFAULT_INGRESS_REPLICAS,
                                             DEFAULT_MAX_NUM_BATCHED_TOKENS, DIRECT_INGRESS_FIRST_PORT,
                                             MAX_NUM_SEQS, SATURATED_PROMPTS, LoadClass, OursOptions, class_slo,
                                             load_classes, mix_commands, mix_section, ours_config, router_stats,
                                             saturated_command)
from autoscaling.bench.priority_report import (PHASE_HEADERS, TABLE_HEADERS, THROUGHPUT_HEADERS, TIMELINE_HEADERS,
                                               class_rows, format_table, merge_runs, phase_rows, throughput_rows,
                                               timeline_rows)
from autoscaling.bench.prometheus_metrics import fetch_metrics_text, preemptions_total
from autoscaling.bench.result_summaries import class_summary, stats_timeline
from autoscaling.bench.samplers import TimelineSampler
from autoscaling.bench.servers import running_server
from autoscaling.bench.vllm_bench import bench_result, run_bench
from autoscaling.bench.vllm_reference import ensure_checkpoint, ours_serve_command, vllm_serve_command

SATURATED_TIMEOUT_S = BENCH_STARTUP_S + 150  # 512 x 256 tokens took 19 s on an H100
SERVER_START_TIMEOUT_S = 420  # ours took 272 s, then 335 s, to be healthy on a fresh H100 machine


def server_command(server: str, args: argparse.Namespace, port: int, raw: Path) -> list[str]:
    model_dir = args.model_dir
    if server == "vllm":
        # The same engine limits as ours (and so the same torch.compile cache on one machine).
        async_flag = {"auto": [], "on": ["--async-scheduling"], "off": ["--no-async-scheduling"]}
        return vllm_serve_command(model_dir, port, ["--max-num-seqs", str(MAX_NUM_SEQS),
                                                    "--max-num-batched-tokens", str(args.max_num_batched_tokens),
                                                    *async_flag[args.async_scheduling]])
    return ours_serve_command(ours_config(model_dir, port, OursOptions.from_args(args)), raw / "ours_config.yaml")


def run_server(server: str, args: argparse.Namespace, raw: Path) -> dict:
    """Start one server, run the saturated reference and the mix, save the partial JSON as it goes."""
    port = args.port if server == "ours" else args.port + 1
    health_url = f"http://127.0.0.1:{port}/health"
    # With direct ingress the benches talk to the (one) ingress replica's own port; the proxy still
    # answers the health check.
    base_url = (f"http://127.0.0.1:{DIRECT_INGRESS_FIRST_PORT}" if server == "ours" and args.direct_ingress
                else f"http://127.0.0.1:{port}")
    classes = load_classes(args.low_rate, args.high_rate)
    command = server_command(server, args, port, raw)
    run = {"benchmark": "priority_vs_vllm", "server": server, "gpu": gpu_name(), "shape": args.shape,
           "script": "python benchmarks/priority_vs_vllm.py " + shlex.join(sys.argv[1:]),
           "server_command": shlex.join(command),
           "load": {"duration_s": args.duration_s, "drain_timeout_s": args.drain_timeout_s,
                    "saturated_prompts": SATURATED_PROMPTS,
                    "classes": {name: {**asdict(k), **class_slo(name)} for name, k in classes.items()}}}
    if server == "ours":
        run["config"] = ours_config(args.model_dir, port, OursOptions.from_args(args))
    partial = args.out / f"priority_vs_vllm_{server}.json"

    def save() -> None:
        partial.write_text(json.dumps(run, indent=2))

    save()
    try:
        measure(server, run, command, classes, base_url, health_url, args, raw, save)
    except Exception as error:
        run["error"] = repr(error)[-4000:]
        save()
        raise
    return run


def measure(server: str, run: dict, command: list[str], classes: dict[str, LoadClass], base_url: str,
            health_url: str, args: argparse.Namespace, raw: Path, save) -> None:
    """The server's life: healthy, saturated reference, mix, router stats; `run` filled in as it goes."""
    with running_server(command, raw / f"{server}_server.log", health_url, SERVER_START_TIMEOUT_S) as ready_s:
        run["server_ready_s"] = ready_s
        log(f"{server} healthy after {ready_s:.0f}s")
        reference = None
        if args.skip_saturated:
            run["saturated"] = {"skipped": "--skip-saturated: compare with an earlier run's reference"}
        else:
            saturated = saturated_command(server, classes, base_url, args.model_dir, raw)
            run["saturated"] = {"command": shlex.join(saturated)}
            try:
                reference = run_bench(saturated, raw / f"{server}_saturated.log", SATURATED_TIMEOUT_S)
                run["saturated"]["summary"] = class_summary(reference)
            except Exception as error:  # the mix still tells about priorities without the reference
                run["saturated"]["error"] = repr(error)
        save()
        preempted_before = preemptions_total(fetch_metrics_text(f"{base_url}/metrics") or "")
        mix = mix_commands(server, classes, base_url, args.model_dir, raw, args.duration_s)
        # All at once: each bench spends ~30 s importing vLLM before its first arrival, so starting
        # high after low's arrivals began (run 1-5) left high overlapping the flood for only ~6 s.
        # Ours: the router's stats every 2 s show where high-priority first tokens waited over time
        # (ingress vs replica TTFT) beside the queue and the window.
        with TimelineSampler(lambda: router_stats(base_url, quiet=True) if server == "ours" else None) as timeline:
            processes = run_concurrently(mix, raw, lead=None,
                                         timeout_s=BENCH_STARTUP_S + args.duration_s + args.drain_timeout_s)
        preempted_after = preemptions_total(fetch_metrics_text(f"{base_url}/metrics") or "")
        run["mix"] = mix_section(processes, reference)
        if timeline.samples:
            flood = bench_result(processes["low"].command) if processes["low"].finished_cleanly() else None
            run["mix"]["high_ttft_timeline"] = stats_timeline(timeline.samples, flood, "high")
            print(format_table(TIMELINE_HEADERS, timeline_rows(run["mix"]["high_ttft_timeline"])))
        run["mix"]["engine_preemptions"] = (None if None in (preempted_before, preempted_after)
                                            else preempted_after - preempted_before)
        if server == "ours":
            run["router_stats"] = router_stats(base_url)
        save()


def load_run(path: Path) -> dict:
    """A partial JSON, given as the file or as the folder holding it."""
    if path.is_dir():
        found = sorted(p for p in path.glob("priority_vs_vllm_*.json"))
        if len(found) != 1:
            raise SystemExit(f"{path}: expected one priority_vs_vllm_<server>.json, found {found}")
        path = found[0]
    return json.loads(path.read_text())


def report_and_plots(runs: list[dict], out: Path | None) -> dict:
    """Print the tables; with `out`, write the merged JSON and the two plots there."""
    report = merge_runs(runs)
    print(format_table(TABLE_HEADERS, class_rows(report)))
    print()
    print(format_table(THROUGHPUT_HEADERS, throughput_rows(report)))
    print()
    print(format_table(PHASE_HEADERS, phase_rows(report)))
    if report["ours_mix_vs_vllm_saturated"] is not None:
        print(f"ours mix served / vllm saturated reference = {report['ours_mix_vs_vllm_saturated']:.3f}")
    print(json.dumps(report["verdicts"], indent=2))
    if out is not None:
        from autoscaling.bench.priority_plots import plot_throughput, plot_ttft

        (out / "priority_vs_vllm.json").write_text(json.dumps(report, indent=2))
        plot_ttft(report, out / "priority_ttft.png")
        plot_throughput(report, out / "priority_throughput.png")
        log(f"wrote {out / 'priority_vs_vllm.json'} and the plots")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", choices=["ours", "vllm"], help="run one server (one GPU call each)")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="RUN",
                        help="merge partial JSONs (files or folders holding one) into the side-by-side report; no GPU")
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/models/llama2-7b"))
    parser.add_argument("--shape", default="llama2-7b", help="synthetic shape made at --model-dir if missing")
    parser.add_argument("--duration-s", type=float, default=40, help="arrival window of both classes")
    parser.add_argument("--low-rate", type=float, default=60, help="low-priority requests/s")
    parser.add_argument("--high-rate", type=float, default=2, help="high-priority requests/s")
    parser.add_argument("--drain-timeout-s", type=float, default=120,
                        help="a bench still running this long after its arrivals (plus startup) is killed: hung")
    parser.add_argument("--low-coalesce-s", type=float, default=0.0,
                        help="ours: the low class's stream_coalesce_s (fewer, larger SSE events for the flood)")
    parser.add_argument("--skip-saturated", action="store_true",
                        help="no saturated reference run (saves ~80 s of GPU time when one is on record)")
    parser.add_argument("--ingress-replicas", type=int, default=DEFAULT_INGRESS_REPLICAS,
                        help="ours: ingress replicas (each its own process and event loop)")
    parser.add_argument("--direct-ingress", action="store_true",
                        help="ours: Ray Serve direct ingress (http.direct_ingress_port), the benches "
                             f"talk to the ingress replica on port {DIRECT_INGRESS_FIRST_PORT}, not through the proxy")
    parser.add_argument("--max-num-batched-tokens", type=int, default=DEFAULT_MAX_NUM_BATCHED_TOKENS,
                        help="both servers: tokens per engine step (smaller: shorter steps while the flood's "
                             "prefills run, which a high-priority first token waits behind)")
    parser.add_argument("--async-scheduling", choices=["auto", "on", "off"], default="auto",
                        help="both servers: vLLM's async scheduling (auto: vLLM's choice, on for GPUs). It plans "
                             "step N+1 while step N runs, so a request arriving mid-step waits one more step "
                             "for its first token")
    parser.add_argument("--freeze-gc", choices=["on", "off"], default="on",
                        help="ours: process.freeze_gc_after_start (runs 1-8 predate it: off)")
    parser.add_argument("--full-gc", choices=["scheduled", "python"], default="scheduled",
                        help="ours: process.full_gc (runs 1-9 predate it: python)")
    parser.add_argument("--port", type=int, default=8000, help="ours on PORT, vllm serve on PORT+1")
    parser.add_argument("--raw-dir", type=Path, help="bench JSONs and logs before archiving (default: a temp folder)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.direct_ingress and args.ingress_replicas != 1:
        parser.error("--direct-ingress: one ingress replica (one port for the benches to load)")
    if args.merge:
        report_and_plots([load_run(path) for path in args.merge], args.out)
        return 0
    ensure_checkpoint(args.model_dir, args.shape)
    raw = args.raw_dir or Path(tempfile.mkdtemp(prefix="priority_vs_vllm_"))
    raw.mkdir(parents=True, exist_ok=True)
    runs = []
    try:
        for server in [args.only] if args.only else ["ours", "vllm"]:
            runs.append(run_server(server, args, raw))
    finally:
        archive(raw, args.out / f"priority_vs_vllm_{args.only or 'both'}_raw.tar.gz")
    report_and_plots(runs, args.out if len(runs) == 2 else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
