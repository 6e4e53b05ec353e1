"""benchmarks/cache_routing_h200.py's plots, from its part files alone: TTFT CDF per routing mode and
per-tenant goodput bars of the fairness runs."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

TTFT_CDF = "ttft_cdf_by_routing_mode.png"
TENANT_GOODPUT = "tenant_goodput.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def ttft_cdf(routing_parts: Mapping[str, Mapping[str, Any]], out_dir: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, workload, title in ((axes[0], "shared_prefix", "shared prefixes"), (axes[1], "no_prefix", "no shared prefix")):
        for mode, part in routing_parts.items():
            ttfts = part[workload]["ttfts_s"]
            if ttfts:
                ax.plot(ttfts, [(i + 1) / len(ttfts) for i in range(len(ttfts))], label=mode)
        ax.set(title=f"TTFT CDF, {title}", xlabel="TTFT (s)", ylabel="share of completed requests")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / TTFT_CDF
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tenant_goodput(fairness: Mapping[str, Any], out_dir: Path) -> Path:
    plt = _pyplot()
    bars = [(f"{run}\n{tenant}", stats.get("goodput_in_window_rps") or 0.0)
            for run in ("contended", "light_alone", "weighted")
            for tenant, stats in fairness[run]["tenants"].items()]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.bar([label for label, _ in bars], [value for _, value in bars], color=[f"C{i}" for i in range(len(bars))])
    ax.set(title="goodput per tenant (requests within SLO per second of arrivals)", ylabel="req/s")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path = out_dir / TENANT_GOODPUT
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
