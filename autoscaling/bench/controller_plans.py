"""Issue 19's controller benchmark, its pure parts: the engine settings compared per preset (the
controller's plan for each batch-size policy, vLLM's defaults, a max_num_seqs x max_num_batched_tokens
sweep), a run's figures from the load driver's stats of it (goodput: requests within both of the
preset's SLOs per second of the run), the Pareto front (throughput vs p99 TTFT) and the goals summary.json judges.
benchmarks/controller_h200.py does the I/O.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoscaling.bench.priority_load import OursOptions, ours_config
from autoscaling.bench.vs_vllm_goals import goal
from serve_app.config import KV_SIZING_BY_POLICY
from serve_app.memory import ModelShape
from serve_app.memory.presets import UseCasePreset
from serve_app.policy.batch_controller import DeviceInfo, plan_engine

# The controller's batch-size policies compared: every `engine.batch_size_policy` that plans.
CONTROLLER_POLICIES: tuple[str, ...] = tuple(KV_SIZING_BY_POLICY)
VLLM_DEFAULT = "vllm_default"
# vLLM's defaults for its OpenAI server on a GPU of >= 70 GiB that is no A100 (H100, H200), as
# `EngineArgs._set_default_args` sets them (vLLM 0.10 to 0.32 at least).
VLLM_DEFAULT_MAX_NUM_SEQS = 1024
VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
MAX_NUM_SEQS_GRID: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)
CHUNKED_PREFILL_BUDGETS: tuple[int, ...] = (512, 1024, 2048, 4096, 8192)
# The controller plans with this per-step budget as its ceiling (serve_app/deployments/controller.py).
PLANNING_MAX_NUM_BATCHED_TOKENS = 8192
# Issue 19's thresholds.
GOODPUT_OF_BEST_GOAL = 0.95
KV_CAPACITY_TOLERANCE = 0.03


@dataclass(frozen=True, order=True)
class EngineSetting:
    max_num_batched_tokens: int
    max_num_seqs: int

    def to_dict(self) -> dict[str, int]:
        return {"max_num_seqs": self.max_num_seqs, "max_num_batched_tokens": self.max_num_batched_tokens}


@dataclass(frozen=True)
class Plan:
    """A named engine setting: `controller:<policy>` or `vllm_default`."""

    label: str
    setting: EngineSetting
    predicted_kv_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, **self.setting.to_dict(), "predicted_kv_tokens": self.predicted_kv_tokens}


def available_policies(wanted: Iterable[str] = CONTROLLER_POLICIES) -> tuple[str, ...]:
    """The wanted policies that the controller plans by (vLLM's default plans nothing)."""
    return tuple(name for name in wanted if name in KV_SIZING_BY_POLICY)


def controller_plan(policy: str, shape: ModelShape, device: DeviceInfo, preset: UseCasePreset, *,
                    max_model_len: int, gpu_memory_utilization: float, kv_cache_dtype: str = "auto") -> Plan:
    """What the controller gives a replica on `device` under `policy`, as its deployment calls it."""
    plan = plan_engine(shape, device, preset, max_model_len=max_model_len,
                       gpu_memory_utilization=gpu_memory_utilization,
                       max_num_batched_tokens=PLANNING_MAX_NUM_BATCHED_TOKENS, kv_cache_dtype=kv_cache_dtype,
                       kv_sizing=KV_SIZING_BY_POLICY[policy])
    args = plan.engine_args
    return Plan(f"controller:{policy}", EngineSetting(args["max_num_batched_tokens"], args["max_num_seqs"]),
                plan.predicted_kv_tokens)


def vllm_default_plan() -> Plan:
    return Plan(VLLM_DEFAULT, EngineSetting(VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS, VLLM_DEFAULT_MAX_NUM_SEQS))


def sweep_budgets(plans: Iterable[Plan], extra: Iterable[int] = ()) -> list[int]:
    """The token budgets a preset is measured at: each plan's, vLLM's default and `extra`; one engine each."""
    return sorted({*(p.setting.max_num_batched_tokens for p in plans), *extra})


def settings_at_budget(budget: int, plans: Iterable[Plan], grid: Iterable[int] = MAX_NUM_SEQS_GRID) -> list[EngineSetting]:
    """What one engine at `budget` measures: every grid max_num_seqs and each plan of that budget;
    none above the budget (vLLM refuses max_num_seqs > max_num_batched_tokens)."""
    seqs = {*grid, *(p.setting.max_num_seqs for p in plans if p.setting.max_num_batched_tokens == budget)}
    return [EngineSetting(budget, n) for n in sorted(seqs) if n <= budget]


def engine_max_num_seqs(budget: int, plans: Iterable[Plan], grid: Iterable[int] = MAX_NUM_SEQS_GRID) -> int:
    """The max_num_seqs an engine at `budget` starts with: the largest any setting needs (at most the
    budget); a smaller one is the load driver's concurrency cap (max_num_seqs emulated, no restart)."""
    return min(budget, max([*grid, *(p.setting.max_num_seqs for p in plans)]))


# ---- one run's figures ------------------------------------------------------------------------------
def run_row(stats: Mapping[str, Any], duration_s: float) -> dict[str, Any]:
    """A run's figures from the load driver's stats of it (`autoscaling.loadtest.metrics.class_stats`,
    whose goodput judges each completed request against the SLO the run was given)."""
    sent, completed = stats["sent"], stats["completed"]
    met = stats["goodput_rps"] * duration_s
    return {"sent": sent, "completed": completed, "failed": sent - completed,
            "duration_s": duration_s, "goodput_rps": stats["goodput_rps"],
            "slo_attainment": met / sent if sent else None,
            "request_throughput_rps": stats["request_throughput_rps"],
            "output_token_throughput_tps": stats["output_token_throughput_tps"],
            "ttft_p50_s": stats["ttft_s"]["p50"], "ttft_p99_s": stats["ttft_s"]["p99"],
            "tpot_p50_s": stats["tpot_s"]["p50"], "tpot_p99_s": stats["tpot_s"]["p99"]}


def pareto_front(rows: Sequence[Mapping[str, Any]], x: str = "output_token_throughput_tps",
                 y: str = "ttft_p99_s", higher_x_better: bool = True) -> list[Mapping[str, Any]]:
    """The rows no other row beats on both: better `x` (higher throughput, or lower where not
    `higher_x_better`) and lower `y` (p99 latency); sorted by x."""
    sign = 1 if higher_x_better else -1
    points = [r for r in rows if r.get(x) is not None and r.get(y) is not None]

    def beats(o: Mapping[str, Any], r: Mapping[str, Any]) -> bool:
        return sign * o[x] >= sign * r[x] and o[y] <= r[y] and (sign * o[x] > sign * r[x] or o[y] < r[y])

    return sorted((r for r in points if not any(beats(o, r) for o in points)), key=lambda r: r[x])


def chunked_prefill_front(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Token budgets no other beats on both the long prompts' TTFT p99 and the decodes' TPOT p99."""
    return pareto_front(rows, x="prefill_ttft_p99_s", y="decode_tpot_p99_s", higher_x_better=False)


def _key(row: Mapping[str, Any]) -> EngineSetting:
    return EngineSetting(row["max_num_batched_tokens"], row["max_num_seqs"])


def row_for(rows: Sequence[Mapping[str, Any]], plan: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The measured row of a plan's engine setting."""
    return next((r for r in rows if _key(r) == _key(plan)), None)


def best_row(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return max(rows, key=lambda r: r["goodput_rps"], default=None)


# ---- goals ------------------------------------------------------------------------------------------
def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def preset_goals(preset: str, part: Mapping[str, Any]) -> list[dict]:
    """Each controller plan's goodput against the sweep's best and against vLLM's defaults."""
    rows, plans = part.get("rows") or [], part.get("plans") or []
    best = best_row(rows)
    default = next((row_for(rows, p) for p in plans if p["label"] == VLLM_DEFAULT), None)
    goals = []
    for plan in (p for p in plans if p["label"] != VLLM_DEFAULT):
        ours = row_for(rows, plan)
        name = f"{preset}: {plan['label']} (max_num_seqs {plan['max_num_seqs']}, budget {plan['max_num_batched_tokens']})"
        if ours is None or best is None or default is None:
            goals.append(goal(f"{name}: its, the sweep's and vLLM's defaults' runs measured", False, True, False))
            continue
        of_best = ours["goodput_rps"] / best["goodput_rps"] if best["goodput_rps"] > 0 else None
        goals.append(goal(f"{name}: goodput over the sweep's best (max_num_seqs {best['max_num_seqs']}, budget "
                          f"{best['max_num_batched_tokens']}: {best['goodput_rps']:.3f} req/s)", _rounded(of_best),
                          f">= {GOODPUT_OF_BEST_GOAL:g}", of_best is not None and of_best >= GOODPUT_OF_BEST_GOAL))
        goals.append(goal(f"{name}: goodput (req/s) against vLLM's defaults' {default['goodput_rps']:.3f}",
                          _rounded(ours["goodput_rps"]), f">= {default['goodput_rps']:.3f}",
                          ours["goodput_rps"] >= default["goodput_rps"]))
    return goals


def kv_capacity_goals(statuses: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """Per KV dtype: the controller's predicted KV tokens against vLLM's allocation (our app's
    /v1/controller/status, one replica)."""
    goals = []
    for dtype, status in statuses.items():
        replica = next(iter(status.values()), None) if status else None
        predicted = (replica or {}).get("predicted_kv_tokens")
        actual = (replica or {}).get("actual_kv_tokens")
        if not predicted or not actual:
            goals.append(goal(f"KV capacity {dtype}: predicted and allocated reported", False, True, False))
            continue
        error = predicted / actual - 1
        goals.append(goal(f"KV capacity {dtype}: predicted {predicted:,} vs vLLM's {actual:,} tokens (relative error)",
                          _rounded(error, 4), f"within +-{KV_CAPACITY_TOLERANCE:.0%}",
                          abs(error) <= KV_CAPACITY_TOLERANCE))
    return goals


def summary(presets: Mapping[str, Mapping[str, Any]], fp8: Mapping[str, Any] | None,
            chunked: Mapping[str, Any] | None, commands: Sequence[str], gpu: str) -> dict[str, Any]:
    """summary.json: the goals, and per preset its plans, best sweep point and Pareto front."""
    goals = [g for name, part in presets.items() for g in preset_goals(name, part)]
    goals += kv_capacity_goals((fp8 or {}).get("status") or {}) if fp8 else \
        [goal("KV capacity: fp8-kv part measured", False, True, False)]
    table = {name: {"rate_rps": part.get("rate_rps"), "plans": part.get("plans"),
                    "best": best_row(part.get("rows") or []),
                    "pareto": [_key(r).to_dict() for r in pareto_front(part.get("rows") or [])]}
             for name, part in presets.items()}
    chunked_rows = (chunked or {}).get("rows") or []
    controller_budget = (chunked or {}).get("controller_budget")
    front = [r["max_num_batched_tokens"] for r in chunked_prefill_front(chunked_rows)]
    return {"gpu": gpu, "commands": list(commands), "goals": goals, "presets": table,
            "chunked_prefill": {"rows": chunked_rows, "controller_budget": controller_budget,
                                "front_budgets": front, "controller_budget_on_front": controller_budget in front
                                if chunked_rows else None},
            "fp8_kv": (fp8 or {}).get("runs")}


# ---- our app for the fp8-kv part --------------------------------------------------------------------
def ours_kv_config(model_dir: Path, port: int, preset: UseCasePreset, *, kv_cache_dtype: str, policy: str,
                   max_model_len: int, gpu_memory_utilization: float) -> dict[str, Any]:
    """One replica whose controller plans the batch for `preset` under `policy` (nothing pinned), so
    /v1/controller/status reports its predicted KV tokens beside vLLM's allocation; one class with the
    preset's SLO, whose queue deadline outlasts the run (the engine's plan, not the router, decides)."""
    config = ours_config(model_dir, port, OursOptions())
    config["engine"].update(max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                            max_num_seqs=None, max_num_batched_tokens=None, kv_cache_dtype=kv_cache_dtype,
                            batch_size_policy=policy, preset=preset.name, enable_prefix_caching=False)
    config["priority_classes"] = [{"name": preset.name, "ttft_slo_s": preset.ttft_s, "tpot_slo_s": preset.tpot_s,
                                   "queue_deadline_s": 600.0}]
    config["default_priority"] = preset.name
    return config
