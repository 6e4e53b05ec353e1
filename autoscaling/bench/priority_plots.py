"""PNG plots of the merged priority benchmark report (matplotlib, Agg): TTFT per class and
throughput, each server side by side."""
from __future__ import annotations

from pathlib import Path

CLASSES = ("high", "low")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_ttft(report: dict, path: Path) -> None:
    """p50 and p99 TTFT per class, one bar per server and percentile, log scale, with the high-class goal."""
    plt = _pyplot()
    servers = list(report["servers"])
    bars = [(server, percentile) for server in servers for percentile in ("p50", "p99")]
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(7, 4))
    for index, (server, percentile) in enumerate(bars):
        classes = report["servers"][server].get("mix", {}).get("classes", {})
        values = [classes.get(name, {}).get(f"ttft_{percentile}_ms") or 0 for name in CLASSES]
        positions = [i + (index - (len(bars) - 1) / 2) * width for i in range(len(CLASSES))]
        drawn = ax.bar(positions, values, width, label=f"{server} {percentile}", color=f"C{servers.index(server)}",
                       alpha=0.55 if percentile == "p50" else 1.0, hatch="//" if percentile == "p99" else None)
        ax.bar_label(drawn, labels=[f"{v:,.0f}" if v else "n/a" for v in values], fontsize=7)
    ax.axhline(report["goals"]["high_ttft_p99_ms"], color="red", linestyle="--", linewidth=1,
               label="high p99 goal")
    ax.set_xticks(range(len(CLASSES)), [f"{name} priority" for name in CLASSES])
    ax.set(yscale="log", ylabel="TTFT (ms)", title=f"TTFT under a low-priority flood ({report.get('gpu') or ''})")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_throughput(report: dict, path: Path) -> None:
    """Saturated reference vs what the mixed run served (split by class), per server."""
    plt = _pyplot()
    servers = list(report["servers"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for index, server in enumerate(servers):
        run = report["servers"][server]
        saturated = run.get("saturated", {}).get("summary", {}).get("output_tok_s") or 0
        ax.bar(index - 0.2, saturated, 0.4, color="grey", label="saturated reference" if index == 0 else None)
        bottom = 0.0
        mix = run.get("mix", {})
        for name, color in zip(CLASSES, ("tab:red", "tab:blue")):
            klass = mix.get("classes", {}).get(name, {})
            # Each class's tokens over the longest run, so the stack adds up to the mix's served rate.
            share = (klass.get("total_output_tokens") or 0) / mix["window_s"] if mix.get("window_s") else 0
            ax.bar(index + 0.2, share, 0.4, bottom=bottom, color=color,
                   label=f"mix: {name} priority" if index == 0 else None)
            bottom += share
        ratio = mix.get("served_vs_saturated")
        ax.text(index + 0.2, bottom, f"{ratio:.2f}x" if ratio else "n/a", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(servers)), servers)
    ax.set(ylabel="output tokens/s", title="Served throughput: saturated reference vs mixed run")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
