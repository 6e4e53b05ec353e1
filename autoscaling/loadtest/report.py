"""Report of a rate sweep (or one run): PNG plots against offered load, a markdown table, and the
compact table the CLI prints. Works from the result dicts alone, so also from a saved sweep JSON."""
from __future__ import annotations

from pathlib import Path
from typing import Any

PLOTS = ("latency_vs_load.png", "throughput_vs_load.png", "goodput_vs_load.png")


def runs_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs of a sweep JSON, or a one-run list for a single load test."""
    if result.get("kind") == "rate_sweep":
        return list(result["runs"])
    if result.get("kind") == "load_test":
        return [result]
    raise ValueError(f"not a load-test or rate-sweep result (kind={result.get('kind')!r})")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def summary_table(result: dict[str, Any]) -> str:
    """One line per run and class (and tenant): counts, TTFT/TPOT/e2e p50/p99 (ms), throughputs and goodput."""
    header = (f"{'offered':>8} {'class':<12} {'sent':>5} {'ok':>5} {'429':>4} {'503':>4} {'fail':>4} "
              f"{'ttft p50/p99 ms':>16} {'tpot p50/p99 ms':>16} {'e2e p50/p99 ms':>16} {'req/s':>7} "
              f"{'out tok/s':>9} {'goodput':>7}")
    lines = [header, "-" * len(header)]
    for run in runs_of(result):
        offered = run.get("offered_rate_rps")
        # Tenants (multi-tenant workloads) as `@name` rows below the classes.
        tenants = [(f"@{name}", stats) for name, stats in (run.get("tenants") or {}).items()]
        rows = [*run["classes"].items(), *tenants, ("(all)", run["overall"])]
        for name, s in rows:
            pct = lambda key: f"{_ms(s[key]['p50'])}/{_ms(s[key]['p99'])}"  # noqa: E731
            lines.append(f"{'-' if offered is None else f'{offered:.2f}':>8} {name:<12} {s['sent']:>5} "
                         f"{s['completed']:>5} {s['refused_429']:>4} {s['refused_503']:>4} {s['failed']:>4} "
                         f"{pct('ttft_s'):>16} {pct('tpot_s'):>16} {pct('e2e_s'):>16} "
                         f"{s['request_throughput_rps']:>7.2f} {s['output_token_throughput_tps']:>9.1f} "
                         f"{s['goodput_rps']:>7.2f}")
    return "\n".join(lines)


def _offered(run: dict[str, Any]) -> float:
    if run.get("offered_rate_rps") is not None:
        return run["offered_rate_rps"]
    return run["workload"]["arrival"].get("rate_rps") or 0.0


def _class_names(runs: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(name for run in runs for name in run["classes"]))


def _series(runs: list[dict[str, Any]], name: str, metric: str, key: str | None = None) -> tuple[list, list]:
    xs, ys = [], []
    for run in runs:
        stats = run["overall"] if name == "(all)" else run["classes"].get(name)
        value = None if stats is None else (stats[metric][key] if key else stats[metric])
        if value is not None:
            xs.append(_offered(run))
            ys.append(value)
    return xs, ys


def write_report(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write the PNG plots and report.md into `out_dir`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = sorted(runs_of(result), key=_offered)
    names = _class_names(runs)
    colors = {name: f"C{i}" for i, name in enumerate([*names, "(all)"])}
    paths = [out / p for p in PLOTS]

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric, title in ((axes[0], "ttft_s", "TTFT"), (axes[1], "tpot_s", "TPOT")):
        for name in names:
            for key, style in (("p50", "-o"), ("p99", "--^")):
                xs, ys = _series(runs, name, metric, key)
                ax.plot(xs, [y * 1000 for y in ys], style, color=colors[name], label=f"{name} {key}")
        ax.set(title=f"{title} vs offered load", xlabel="offered load (req/s)", ylabel=f"{title} (ms)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    top = max([_offered(r) for r in runs] or [1.0])
    axes[0].plot([0, top], [0, top], ":", color="gray", label="served = offered")
    for name in [*names, "(all)"]:
        xs, ys = _series(runs, name, "request_throughput_rps")
        axes[0].plot(xs, ys, "-o", color=colors[name], label=name)
        xs, ys = _series(runs, name, "output_token_throughput_tps")
        axes[1].plot(xs, ys, "-o", color=colors[name], label=name)
    axes[0].set(title="request throughput vs offered load", xlabel="offered load (req/s)", ylabel="completed req/s")
    axes[1].set(title="output token throughput vs offered load", xlabel="offered load (req/s)",
                ylabel="output tokens/s")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name in [*names, "(all)"]:
        xs, ys = _series(runs, name, "goodput_rps")
        ax.plot(xs, ys, "-o", color=colors[name], label=name)
    ax.set(title="goodput (requests within their SLO) vs offered load", xlabel="offered load (req/s)",
           ylabel="goodput (req/s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=110)
    plt.close(fig)

    slos = {name: s["slo"] for run in runs for name, s in run["classes"].items()}
    markdown = out / "report.md"
    markdown.write_text(
        "# Load test report\n\n" + (f"`{result.get('command')}`\n\n" if result.get("command") else "")
        + "SLOs: " + ", ".join(f"{n} TTFT {s['ttft_s']} s / TPOT {s['tpot_s']} s" for n, s in slos.items())
        + "\n\n```\n" + summary_table(result) + "\n```\n\n"
        + "".join(f"![{p.stem}]({p.name})\n\n" for p in paths))
    return [*paths, markdown]
