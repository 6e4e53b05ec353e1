"""benchmarks/controller_h200.py's plots and table, from its part files alone: per preset, throughput
against p99 TTFT of every engine setting measured (the Pareto front joined, the controller's picks and
vLLM's defaults marked); the chunked-prefill budgets' TTFT p99 against TPOT p99; the fp8-kv part's router
windows over each run; the sustained part's course per 10 s of arrivals; where our app's first tokens
waited over each run that sampled it."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoscaling.bench.controller_plans import (VLLM_DEFAULT, chunked_prefill_front, goodput, pareto_front, row_for,
                                                same_rate, vllm_default_plan)

KV_DTYPES = ("fp16", "fp8")
FP8_KV_RUNS = ("capacity", "goodput")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def preset_pareto(preset: str, part: Mapping[str, Any], out_dir: Path) -> Path:
    plt = _pyplot()
    rows = [r for r in part.get("rows") or [] if r.get("ttft_p99_s") is not None]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    budgets = sorted({r["max_num_batched_tokens"] for r in rows})
    for budget in budgets:
        at = [r for r in rows if r["max_num_batched_tokens"] == budget]
        ax.scatter([r["output_token_throughput_tps"] for r in at], [r["ttft_p99_s"] for r in at], s=18,
                   label=f"budget {budget}")
        for r in at:
            ax.annotate(str(r["max_num_seqs"]), (r["output_token_throughput_tps"], r["ttft_p99_s"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    front = pareto_front(rows)
    ax.plot([r["output_token_throughput_tps"] for r in front], [r["ttft_p99_s"] for r in front], "k--", lw=0.8,
            label="Pareto front")
    for plan in part.get("plans") or []:
        measured = row_for(rows, plan)
        if measured is not None:
            marker = "X" if plan["label"] == VLLM_DEFAULT else "*"
            ax.scatter([measured["output_token_throughput_tps"]], [measured["ttft_p99_s"]], marker=marker, s=160,
                       edgecolors="black", label=f"{plan['label']} ({plan['max_num_seqs']}, "
                                                 f"{plan['max_num_batched_tokens']})")
    if (app := part.get("app_run")) is not None and app.get("ttft_p99_s") is not None:
        ax.scatter([app["output_token_throughput_tps"]], [app["ttft_p99_s"]], marker="P", s=160, edgecolors="black",
                   label=f"our app (router window over 1024, {app.get('slo_attainment', 0):.0%} met)")
    ax.set(title=f"{preset} at {part.get('rate_rps') or 0:.2f} req/s: settings (labels: max_num_seqs)",
           xlabel="output tokens/s", ylabel="TTFT p99 (s)", yscale="log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / f"pareto_{preset}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def chunked_prefill(part: Mapping[str, Any], out_dir: Path) -> Path:
    plt = _pyplot()
    rows = [r for r in part.get("rows") or [] if r.get("prefill_ttft_p99_s") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([r["prefill_ttft_p99_s"] for r in rows], [r["decode_tpot_p99_s"] for r in rows], "o")
    # Neighbours' labels alternate above and below their points, which may lie close together.
    for i, r in enumerate(sorted(rows, key=lambda row: row["prefill_ttft_p99_s"])):
        ax.annotate(str(r["max_num_batched_tokens"]), (r["prefill_ttft_p99_s"], r["decode_tpot_p99_s"]),
                    xytext=(4, 6 if i % 2 == 0 else -14), textcoords="offset points", fontsize=8)
    front = chunked_prefill_front(rows)
    ax.plot([r["prefill_ttft_p99_s"] for r in front], [r["decode_tpot_p99_s"] for r in front], "k--", lw=0.8,
            label="front")
    ours = next((r for r in rows if r["max_num_batched_tokens"] == part.get("controller_budget")), None)
    if ours is not None:
        ax.scatter([ours["prefill_ttft_p99_s"]], [ours["decode_tpot_p99_s"]], marker="*", s=200, edgecolors="black",
                   label=f"controller's budget {ours['max_num_batched_tokens']}")
    ax.set(title="long prompts among decodes, per max_num_batched_tokens", xlabel="long prompts' TTFT p99 (s)",
           ylabel="decodes' TPOT p99 (s)")
    # From zero: a few percent apart must look a few percent apart.
    if rows:
        ax.set_xlim(0, 1.15 * max(r["prefill_ttft_p99_s"] for r in rows))
        ax.set_ylim(0, 1.15 * max(r["decode_tpot_p99_s"] for r in rows))
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path = out_dir / "chunked_prefill.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _kv_dtypes(by_dtype: Mapping[str, Any]) -> list[str]:
    return [*(d for d in KV_DTYPES if d in by_dtype), *(d for d in by_dtype if d not in KV_DTYPES)]


def _summed(sample: Mapping[str, Any], key: str) -> float:
    """`key` summed over the sample's replicas; NaN (a break in the line) for a gap or no figure."""
    values = [r.get(key) for r in (sample.get("replicas") or {}).values()]
    values = [v for v in values if v is not None]
    return float(sum(values)) if values else float("nan")


def window_cuts(samples: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Per cut rule (`cut_tpot`, `cut_ttft`, ...), (t, summed window) of each sample whose replicas'
    `window_state.moves` counted more cuts of it than the sample before: when and to where the window fell."""
    cuts: dict[str, list[tuple[float, float]]] = {}
    before: dict[str, int] = {}
    for sample in samples:
        counts: dict[str, int] = {}
        for replica in (sample.get("replicas") or {}).values():
            for move, n in ((replica.get("window_state") or {}).get("moves") or {}).items():
                if move.startswith("cut_"):
                    counts[move] = counts.get(move, 0) + n
        for move, n in counts.items():
            if n > before.get(move, 0) and before:
                cuts.setdefault(move, []).append((sample["t_s"], _summed(sample, "window")))
        if counts:
            before = counts
    return cuts


def router_timeline(part: Mapping[str, Any], out_dir: Path) -> Path:
    """The fp8-kv part's router samples per KV dtype and run: the replicas' windows, their caps, requests
    in flight and the router's queue, over the run."""
    plt = _pyplot()
    runs_by_dtype = part.get("runs") or {}
    dtypes = _kv_dtypes(runs_by_dtype) or list(KV_DTYPES)
    fig, axes = plt.subplots(len(dtypes), len(FP8_KV_RUNS), figsize=(12, 3.8 * len(dtypes)), squeeze=False,
                             sharex="col")
    for row_axes, dtype in zip(axes, dtypes):
        for ax, run in zip(row_axes, FP8_KV_RUNS):
            measured = (runs_by_dtype.get(dtype) or {}).get(run)
            offered = "closed loop" if not measured or measured.get("rate_rps") is None \
                else f"{measured['rate_rps']:.2f} req/s"
            samples = (measured or {}).get("router_timeline") or []
            if not samples:
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            t = [s["t_s"] for s in samples]
            for key, style in (("window", "-"), ("window_cap", "--"), ("in_flight", "-")):
                ax.plot(t, [_summed(s, key) for s in samples], style, lw=1.2, label=key)
            queue = [float("nan") if s.get("queue_depth") is None else s["queue_depth"] for s in samples]
            ax.plot(t, queue, ":", lw=1.5, label="router queue_depth")
            attainment = (measured or {}).get("slo_attainment")
            attainment = "-" if attainment is None else f"{attainment:.0%}"
            ax.set(title=f"{dtype} KV, {run} ({offered}): SLO met {attainment}", xlabel="t (s)", ylabel="requests")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle("router windows over each fp8-kv run (summed over replicas)")
    fig.tight_layout()
    path = out_dir / "router_timeline.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cell(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _missed(r: Mapping[str, Any]) -> str:
    """Shares of the requests sent that missed the SLO on TTFT alone / TPOT alone / both ("-" for runs
    measured before the load driver told them apart)."""
    missed = r.get("slo_missed")
    return "-" if not missed else " / ".join(f"{missed[k]:.3f}" for k in ("ttft_only", "tpot_only", "both"))


def _run_row(kv: str, run: str, offered: str, r: Mapping[str, Any]) -> str:
    return (f"| {kv} | {run} | {offered} | {_cell(goodput(r))} | {_cell(r.get('slo_attainment'))} | {_missed(r)} "
            f"| {_cell(r.get('request_throughput_rps'))} | {_cell(r.get('output_token_throughput_tps'), 0)} "
            f"| {_cell(r.get('ttft_p50_s'))} | {_cell(r.get('ttft_p99_s'))} | {_cell(r.get('tpot_p99_s'), 4)} "
            f"| {_cell(r.get('failed'))} |")


def vllm_default_at_rates(preset_part: Mapping[str, Any] | None, rates: list[float | None]) -> Mapping[str, Any] | None:
    """The preset part's row of vLLM's defaults with its offered rate, where that is one of `rates`."""
    if not preset_part:
        return None
    plans = preset_part.get("plans") or []
    plan = next((p for p in plans if p["label"] == VLLM_DEFAULT), vllm_default_plan().to_dict())
    default = row_for(preset_part.get("rows") or [], plan)
    if default is None:
        return None
    rate = default.get("rate_rps", preset_part.get("rate_rps"))
    return {**default, "rate_rps": rate} if any(same_rate(rate, r) for r in rates) else None


def _tokens(count: int | None) -> str:
    return "-" if count is None else f"{count:,}"


def _kv_line(dtype: str, replica_id: str, replica: Mapping[str, Any]) -> str:
    plan = replica.get("plan") or {}
    predicted, allocated = replica.get("predicted_kv_tokens"), replica.get("actual_kv_tokens")
    error = f" ({predicted / allocated - 1:+.2%})" if predicted and allocated else ""
    return (f"- {dtype} KV, replica {replica_id} (planned max_num_seqs {plan.get('max_num_seqs', '-')}, budget "
            f"{plan.get('max_num_batched_tokens', '-')}): predicted {_tokens(predicted)} KV tokens, vLLM allocated "
            f"{_tokens(allocated)}{error}")


def fp8_kv_section(part: Mapping[str, Any], preset: str, preset_part: Mapping[str, Any] | None) -> list[str]:
    """summary.md's fp8-kv lines: our app's runs per KV dtype, vLLM's defaults at the goodput runs' rate
    where the preset part measured them there, and each replica's predicted against allocated KV tokens."""
    lines = [f"## our app, FP16 vs FP8 KV ({preset} workload)", "",
             "| KV | run | req/s offered | goodput req/s | SLO met | missed TTFT / TPOT / both | req/s | out tok/s "
             "| TTFT p50 s | TTFT p99 s | TPOT p99 s | failed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    runs_by_dtype = part.get("runs") or {}
    for dtype in _kv_dtypes(runs_by_dtype):
        for run in FP8_KV_RUNS:
            r = runs_by_dtype[dtype].get(run)
            if r is not None:
                offered = "closed loop" if r.get("rate_rps") is None else _cell(r["rate_rps"])
                lines.append(_run_row(dtype, run, offered, r))
    rates = [runs["goodput"].get("rate_rps") for runs in runs_by_dtype.values() if "goodput" in runs]
    default = vllm_default_at_rates(preset_part, rates)
    if default is not None:
        lines.append(_run_row("fp16", "vllm serve, vLLM's defaults (same rate)", _cell(default["rate_rps"]), default))
    lines.append("")
    status = part.get("status") or {}
    lines += [_kv_line(dtype, rid, replica) for dtype in _kv_dtypes(status) for rid, replica in status[dtype].items()]
    lines.append("")
    return lines


def outcome_section(by_run: Mapping[str, Mapping[str, float]]) -> list[str]:
    """summary.md's lines on each saved run's requests: met, missed on TTFT alone / TPOT alone / both."""
    lines = ["## each run's requests by outcome (from its saved requests)", "",
             "| run | sent | met | missed TTFT only | missed TPOT only | missed both | not completed |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {r['sent']} | {r['met']:.3f} | {r['ttft_only']:.3f} | {r['tpot_only']:.3f} "
              f"| {r['both']:.3f} | {r['not_completed']:.3f} |" for name, r in by_run.items()]
    return [*lines, ""]


def table(presets: Mapping[str, Mapping[str, Any]], out_dir: Path, fp8_kv: Mapping[str, Any] | None = None,
          fp8_kv_preset: str = "mixed", by_outcome: Mapping[str, Mapping[str, float]] | None = None) -> Path:
    """summary.md: every measured setting per preset, the plans' rows marked; then the fp8-kv part's runs,
    if measured, beside vLLM's defaults on `fp8_kv_preset`; then each saved run's requests by outcome."""
    lines = []
    for name, part in presets.items():
        plans = part.get("plans") or []
        lines += [f"## {name} at {part.get('rate_rps') or 0:.3f} req/s", "",
                  "| max_num_seqs | budget | plan | goodput req/s | SLO met | missed TTFT / TPOT / both | req/s "
                  "| out tok/s | TTFT p99 s | TPOT p99 s | failed |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(part.get("rows") or [], key=lambda r: (r["max_num_batched_tokens"], r["max_num_seqs"])):
            labels = ", ".join(p["label"] for p in plans if row_for([r], p) is not None)
            lines.append(f"| {r['max_num_seqs']} | {r['max_num_batched_tokens']} | {labels} | {_cell(goodput(r))} "
                         f"| {_cell(r.get('slo_attainment'))} | {_missed(r)} "
                         f"| {_cell(r['request_throughput_rps'])} | {_cell(r['output_token_throughput_tps'], 0)} "
                         f"| {_cell(r['ttft_p99_s'])} | {_cell(r['tpot_p99_s'], 4)} | {r['failed']} |")
        if (app := part.get("app_run")) is not None:
            lines.append(f"| (router window) | 8192 | our app ({app.get('engine', 'ours-fp16')}, started for this "
                         f"preset) | {_cell(goodput(app))} | {_cell(app.get('slo_attainment'))} | {_missed(app)} "
                         f"| {_cell(app['request_throughput_rps'])} | {_cell(app['output_token_throughput_tps'], 0)} "
                         f"| {_cell(app['ttft_p99_s'])} | {_cell(app['tpot_p99_s'], 4)} | {app['failed']} |")
        lines.append("")
    if fp8_kv is not None:
        lines += fp8_kv_section(fp8_kv, fp8_kv_preset, presets.get(fp8_kv_preset))
    if by_outcome:
        lines += outcome_section(by_outcome)
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines))
    return path


def _recent_p50(sample: Mapping[str, Any], seen_by: str) -> float:
    """The worst class's recent TTFT p50 as `seen_by` (ingress or replica) reported it; NaN where absent."""
    by_class = ((sample.get("ttft_recent") or {}).get(seen_by)) or {}
    values = [c["p50_s"] for c in by_class.values() if c.get("p50_s") is not None]
    return max(values) if values else float("nan")


def sustained_timeline(part: Mapping[str, Any], by_arrival: Mapping[str, Mapping[str, list[dict]]],
                       out_dir: Path) -> Path:
    """Per offered rate of the sustained part (columns): the SLO met and TTFT p50 per 10 s of arrivals for
    each engine (`by_arrival`: engine -> rate key -> `controller_runs.by_arrival` rows), and our app's
    router over the run: window, in flight, queue, and how long the ingress took to answer the sampler."""
    plt = _pyplot()
    runs = part.get("runs") or {}
    keys = sorted({key for engine in by_arrival.values() for key in engine}, key=float)
    fig, axes = plt.subplots(3, max(1, len(keys)), figsize=(6 * max(1, len(keys)), 10), squeeze=False)
    for column, key in enumerate(keys):
        met_ax, ttft_ax, router_ax = axes[0][column], axes[1][column], axes[2][column]
        for engine, by_key in by_arrival.items():
            rows = by_key.get(key) or []
            t = [r["t_s"] for r in rows]
            met_ax.plot(t, [100 * r["met"] for r in rows], "-o", ms=3, label=engine)
            ttft_ax.plot(t, [r["ttft_p50_s"] for r in rows], "-o", ms=3, label=f"{engine} p50")
            ttft_ax.fill_between(t, [r["ttft_p10_s"] or 0 for r in rows], [r["ttft_p90_s"] or 0 for r in rows],
                                 alpha=0.15)
        met_ax.set(title=f"{float(key):g} req/s offered: SLO met per 10 s of arrivals", ylabel="% met", ylim=(0, 105))
        samples = ((runs.get("ours-fp16") or {}).get(key) or {}).get("router_timeline") or []
        for seen_by, style in (("ingress", "--"), ("replica", ":")):
            ttft_ax.plot([s["t_s"] for s in samples], [_recent_p50(s, seen_by) for s in samples], style, lw=1,
                         label=f"ours, TTFT p50 as the {seen_by} saw it (last 10 s, by sample time)")
        ttft_ax.set(title="TTFT p50 (band: p10-p90) by arrival time", ylabel="s", yscale="log")
        ttft_ax.set_xlabel("arrival time (s)")
        t = [s["t_s"] for s in samples]
        for name, style in (("window", "-"), ("in_flight", "-")):
            router_ax.plot(t, [_summed(s, name) for s in samples], style, lw=1.2, label=name)
        router_ax.plot(t, [float("nan") if s.get("queue_depth") is None else s["queue_depth"] for s in samples],
                       ":", lw=1.5, label="router queue_depth")
        for (move, points), color in zip(sorted(window_cuts(samples).items()), ("tab:red", "tab:orange", "tab:purple")):
            router_ax.plot([t for t, _ in points], [w for _, w in points], "v", color=color, ms=6,
                           label=f"window {move.replace('_', ' ')}")
        router_ax.set(title="our app's router (samples every 2 s)", xlabel="t (s)", ylabel="requests")
        if any("answer_s" in s for s in samples):
            lag_ax = router_ax.twinx()
            lag_ax.plot(t, [s.get("answer_s", float("nan")) for s in samples], "r.", ms=4,
                        label="ingress answer time (s)")
            lag_ax.set_ylabel("ingress answer time (s)", color="r")
        for ax in (met_ax, ttft_ax, router_ax):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"sustained overload, {part.get('window_s', 0):g} s of arrivals: vLLM's defaults and our app")
    fig.tight_layout()
    path = out_dir / "sustained.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# The stages of `serve_app.generation.FirstPartStamps.stages`, in the order a first part passes them.
FIRST_PART_STAGES = ("before_dispatch", "hop_to_replica", "replica_to_first_token", "first_token_to_delivery",
                     "delivery", "ingress_write")
# `replica_to_first_token` split where vLLM's engine takes over (`EngineStamps.stages`), in the same order.
REPLICA_STAGE_SPLIT = ("replica_before_engine", "engine_intake", "engine_queue", "engine_prefill", "engine_output")


def first_part_stages(samples: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The stages to stack: the replica's split where the samples carry it (runs since 2026-12-03), else whole."""
    if not any("engine_prefill" in (sample.get("first_part_path") or {}) for sample in samples):
        return FIRST_PART_STAGES
    at = FIRST_PART_STAGES.index("replica_to_first_token")
    return (*FIRST_PART_STAGES[:at], *REPLICA_STAGE_SPLIT, *FIRST_PART_STAGES[at + 1:])


def runs_with_first_part_path(parts: Mapping[str, Mapping[str, Any]]) -> dict[str, list[dict]]:
    """Each of our app's runs whose router samples carry `first_part_path`: its name -> its samples (a
    preset part's `app_run`, the fp8-kv part's runs, the sustained part's runs of our app)."""
    timelines: dict[str, list[dict]] = {}
    for name, part in parts.items():
        if (part.get("app_run") or {}).get("router_timeline"):
            timelines[f"{name}: our app"] = part["app_run"]["router_timeline"]
        for who, runs in (part.get("runs") or {}).items():
            for run, figures in runs.items():
                if isinstance(figures, Mapping) and figures.get("router_timeline"):
                    timelines[f"{name}: {who} {run}"] = figures["router_timeline"]
    return {name: samples for name, samples in timelines.items()
            if any(sample.get("first_part_path") for sample in samples)}


def first_part_path(timelines: Mapping[str, Sequence[Mapping[str, Any]]], out_dir: Path) -> Path:
    """Per run (one panel each), the p50 of each stage of our first parts' way over the last 10 s, stacked,
    with the total's p50 and p99 on top: where the ingress's TTFT goes as the load builds."""
    plt = _pyplot()
    names = list(timelines)
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 3.6 * max(1, len(names))), squeeze=False)
    for ax, name in zip((row[0] for row in axes), names):
        samples = [s for s in timelines[name] if s.get("first_part_path")]
        t = [s["t_s"] for s in samples]
        stages = first_part_stages(samples)
        stacks = [[((s["first_part_path"].get(stage) or {}).get("p50_s") or 0.0) for s in samples]
                  for stage in stages]
        ax.stackplot(t, stacks, labels=[f"{stage} p50" for stage in stages], alpha=0.75)
        for quantile, style in (("p50_s", "k-"), ("p99_s", "k:")):
            ax.plot(t, [(s["first_part_path"].get("total") or {}).get(quantile) or float("nan") for s in samples],
                    style, lw=1.2, label=f"total {quantile[:3]}")
        ax.set(title=f"{name}: where first tokens waited (last 10 s, by sample time)", xlabel="t (s)",
               ylabel="s", yscale="linear")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", ncol=2)
    fig.tight_layout()
    path = out_dir / "first_part_path.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

