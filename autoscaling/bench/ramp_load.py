"""Issue 20's GPU ramp: the open-loop load both autoscaling policies see, and the app config it runs on.

Pure: the arrival schedule is low -> high -> low Poisson at multiples of one replica's measured
capacity (a closed-loop probe), two classes (interactive 0.3 with a tight SLO, batch 0.7), uniform
prompt and output lengths; the same seed gives both policies the same requests at the same times.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from autoscaling.bench.priority_load import OursOptions, ours_config
from autoscaling.loadtest.arrivals import GammaArrivals, StepArrivals
from autoscaling.loadtest.lengths import Uniform
from autoscaling.loadtest.metrics import Slo
from autoscaling.loadtest.workload import WorkloadSpec
from serve_app.config import AppConfig, default_priority_classes

CLASSES = ("interactive", "batch")  # highest first; SLOs and queue deadlines are the config's defaults
MAX_NUM_SEQS = 128  # a 7B model's 128 sequences of <= 1,280 tokens fit an H200's KV cache many times over
MAX_NUM_BATCHED_TOKENS = 8192


@dataclass(frozen=True)
class RampShape:
    """Phase lengths, rates as multiples of one replica's capacity, class mix and lengths."""

    # 330 s in all: with the probe and the tail, one ramp fits a 10-minute device call with time to spare.
    low_s: float = 30.0
    high_s: float = 180.0
    low_again_s: float = 120.0
    low_load: float = 0.5    # one replica serves it
    high_load: float = 1.6   # needs two
    interactive_share: float = 0.3
    prompt_len: tuple[int, int] = (256, 1024)
    output_len: tuple[int, int] = (128, 256)
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.low_s, self.high_s, self.low_again_s) <= 0:
            raise ValueError("phase lengths must be positive")
        if not 0 < self.low_load < self.high_load:
            raise ValueError(f"need 0 < low_load < high_load, got {self.low_load}, {self.high_load}")
        if not 0 < self.interactive_share < 1:
            raise ValueError(f"interactive_share must be in (0, 1), got {self.interactive_share}")

    def phases(self) -> list[tuple[str, float, float]]:
        """(name, start_s, end_s) from the ramp's start."""
        high_end = self.low_s + self.high_s
        return [("low", 0.0, self.low_s), ("high", self.low_s, high_end),
                ("low-again", high_end, high_end + self.low_again_s)]

    def duration_s(self) -> float:
        return self.low_s + self.high_s + self.low_again_s

    def arrival(self, capacity_rps: float) -> StepArrivals:
        if not capacity_rps > 0:
            raise ValueError(f"capacity_rps must be positive, got {capacity_rps}")
        return StepArrivals(((self.low_s, self.low_load * capacity_rps), (self.high_s, self.high_load * capacity_rps),
                             (self.low_again_s, self.low_load * capacity_rps)))

    def class_mix(self) -> dict[str, float]:
        return {"interactive": self.interactive_share, "batch": 1.0 - self.interactive_share}

    def workload(self, capacity_rps: float) -> WorkloadSpec:
        """The ramp: open loop, its length the schedule's own."""
        return WorkloadSpec(arrival=self.arrival(capacity_rps), class_mix=self.class_mix(),
                            prompt_len=Uniform(*self.prompt_len), output_len=Uniform(*self.output_len), seed=self.seed)

    def probe(self, concurrency: int, requests: int) -> WorkloadSpec:
        """Closed loop at `concurrency` (one replica's batch limit saturates it): its throughput is the
        capacity the ramp's rates are multiples of. Another seed: no prompt repeats into the ramp's cache."""
        return WorkloadSpec(arrival=GammaArrivals(float("inf")), class_mix=self.class_mix(),
                            prompt_len=Uniform(*self.prompt_len), output_len=Uniform(*self.output_len),
                            num_requests=requests, max_concurrency=concurrency, seed=self.seed + 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RampShape:
        return cls(**{**data, "prompt_len": tuple(data["prompt_len"]), "output_len": tuple(data["output_len"])})


def ramp_classes() -> list[dict[str, Any]]:
    """The config's own interactive and batch classes (SLOs, queue deadlines), highest first."""
    return [c.model_dump() for c in default_priority_classes() if c.name in CLASSES]


def class_slos(config: AppConfig) -> dict[str, Slo]:
    """Each class's SLO as the app that served the ramp judged it."""
    return {c.name: Slo(c.ttft_slo_s, c.tpot_slo_s) for c in config.priority_classes}


def base_config(model_dir: Path, port: int, compile_cache_dir: str | None) -> dict[str, Any]:
    """Our app on the synthetic checkpoint with pinned engine limits; `config_for` adds the autoscaling."""
    config = ours_config(model_dir, port, OursOptions(max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS))
    config["engine"].update(max_num_seqs=MAX_NUM_SEQS, batch_size_policy="vllm_default",
                            **({"compile_cache_dir": compile_cache_dir} if compile_cache_dir else {}))
    config["priority_classes"] = ramp_classes()
    config["default_priority"] = CLASSES[-1]
    return config
