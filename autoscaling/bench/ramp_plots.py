"""benchmarks/autoscaling_ramp_h200.py's plots: replicas over time (both policies, measured and
simulated) and per-class goodput over time, with the ramp's phases shaded."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from autoscaling.bench.ramp_comparison import RampRequest, Sample, goodput_series
from autoscaling.loadtest.metrics import Slo

REPLICAS = "ramp_replicas.png"
GOODPUT = "ramp_goodput.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _phases(ax, phases: Sequence[tuple[str, float, float]]) -> None:
    for name, start, end in phases:
        ax.axvspan(start, end, alpha=0.08, color="red" if name == "high" else "grey")


def replicas_over_time(measured: Mapping[str, Sequence[Sample]], simulated: Mapping[str, Sequence[Sample]],
                       phases: Sequence[tuple[str, float, float]], out_dir: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    for index, policy in enumerate(sorted({*measured, *simulated})):
        for samples, style, label in ((measured.get(policy), "-", "measured"), (simulated.get(policy), "--", "simulated")):
            if samples:
                ax.step([s[0] for s in samples], [s[1] for s in samples], where="post", linestyle=style,
                        color=f"C{index}", label=f"{policy} ({label}, running)")
    _phases(ax, phases)
    ax.set(xlabel="seconds since the ramp began", ylabel="RUNNING replicas", xlim=(0, phases[-1][2] + 10))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / REPLICAS
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def goodput_over_time(measured: Mapping[str, Sequence[RampRequest]], simulated: Mapping[str, Sequence[RampRequest]],
                      slos: Mapping[str, Slo], phases: Sequence[tuple[str, float, float]], out_dir: Path,
                      window_s: float = 10.0) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(len(slos), 1, figsize=(10, 3.2 * len(slos)), sharex=True, squeeze=False)
    end = phases[-1][2]
    for index, policy in enumerate(sorted({*measured, *simulated})):
        for requests, style, label in ((measured.get(policy), "-", "measured"), (simulated.get(policy), "--", "simulated")):
            if not requests:
                continue
            series = goodput_series(requests, slos, window_s, end)
            for ax, name in zip(axes[:, 0], slos):
                ax.plot([(i + 0.5) * window_s for i in range(len(series[name]))], series[name], linestyle=style,
                        color=f"C{index}", label=f"{policy} ({label})")
    for ax, name in zip(axes[:, 0], slos):
        _phases(ax, phases)
        ax.set(ylabel=f"{name} goodput (req/s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel(f"seconds since the ramp began (requests by send time, {window_s:g} s windows)")
    fig.tight_layout()
    path = out_dir / GOODPUT
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
