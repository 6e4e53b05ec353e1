"""benchmarks/controller_h200.py's plots and table, from its part files alone: per preset, throughput
against p99 TTFT of every engine setting measured (the Pareto front joined, the controller's picks and
vLLM's defaults marked); the chunked-prefill budgets' TTFT p99 against TPOT p99."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autoscaling.bench.controller_plans import VLLM_DEFAULT, chunked_prefill_front, goodput, pareto_front, row_for


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
    for r in rows:
        ax.annotate(str(r["max_num_batched_tokens"]), (r["prefill_ttft_p99_s"], r["decode_tpot_p99_s"]),
                    xytext=(4, 4), textcoords="offset points", fontsize=8)
    front = chunked_prefill_front(rows)
    ax.plot([r["prefill_ttft_p99_s"] for r in front], [r["decode_tpot_p99_s"] for r in front], "k--", lw=0.8,
            label="front")
    ours = next((r for r in rows if r["max_num_batched_tokens"] == part.get("controller_budget")), None)
    if ours is not None:
        ax.scatter([ours["prefill_ttft_p99_s"]], [ours["decode_tpot_p99_s"]], marker="*", s=200, edgecolors="black",
                   label=f"controller's budget {ours['max_num_batched_tokens']}")
    ax.set(title="long prompts among decodes, per max_num_batched_tokens", xlabel="long prompts' TTFT p99 (s)",
           ylabel="decodes' TPOT p99 (s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "chunked_prefill.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _cell(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(presets: Mapping[str, Mapping[str, Any]], out_dir: Path) -> Path:
    """summary.md: every measured setting per preset, the plans' rows marked."""
    lines = []
    for name, part in presets.items():
        plans = part.get("plans") or []
        lines += [f"## {name} at {part.get('rate_rps') or 0:.3f} req/s", "",
                  "| max_num_seqs | budget | plan | goodput req/s | SLO met | req/s | out tok/s | TTFT p99 s | TPOT p99 s | failed |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(part.get("rows") or [], key=lambda r: (r["max_num_batched_tokens"], r["max_num_seqs"])):
            labels = ", ".join(p["label"] for p in plans if row_for([r], p) is not None)
            lines.append(f"| {r['max_num_seqs']} | {r['max_num_batched_tokens']} | {labels} | {_cell(goodput(r))} "
                         f"| {_cell(r.get('slo_attainment'))} "
                         f"| {_cell(r['request_throughput_rps'])} | {_cell(r['output_token_throughput_tps'], 0)} "
                         f"| {_cell(r['ttft_p99_s'])} | {_cell(r['tpot_p99_s'], 4)} | {r['failed']} |")
        lines.append("")
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines))
    return path
