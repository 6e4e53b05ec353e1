"""Issue 19's controller benchmark, its pure parts: the engine settings compared per preset (the
controller's plan for each batch-size policy, vLLM's defaults, a max_num_seqs x max_num_batched_tokens
sweep), a run's figures from the load driver's stats of it (goodput: requests within both of the
preset's SLOs per second of the run), the Pareto front (throughput vs p99 TTFT) and the goals summary.json judges.
benchmarks/controller_h200.py does the I/O.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoscaling.bench.priority_load import OursOptions, ours_config
from autoscaling.bench.vs_vllm_goals import goal
from serve_app.config import ADAPTIVE_POLICIES, KV_SIZING_BY_POLICY, EngineSettings
from serve_app.memory import ModelShape
from serve_app.memory.presets import UseCasePreset, get_preset
from serve_app.policy.batch_controller import DeviceInfo, plan_engine

# The controller's batch-size policies compared: every `engine.batch_size_policy` that plans.
CONTROLLER_POLICIES: tuple[str, ...] = tuple(KV_SIZING_BY_POLICY)
VLLM_DEFAULT = "vllm_default"
# The policy a replica plans by unless configured otherwise: what our app runs in the fp8-kv part.
DEFAULT_POLICY: str = EngineSettings.model_fields["batch_size_policy"].default
# The preset whose workload the fp8-kv part sends our app (FP16 and FP8 KV), at the rate of its sweep.
FP8_KV_PRESET = "mixed"
# vLLM's defaults for its OpenAI server on a GPU of >= 70 GiB that is no A100 (H100, H200), as
# `EngineArgs._set_default_args` sets them (vLLM 0.10 to 0.32 at least).
VLLM_DEFAULT_MAX_NUM_SEQS = 1024
VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
MAX_NUM_SEQS_GRID: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)
CHUNKED_PREFILL_BUDGETS: tuple[int, ...] = (512, 1024, 2048, 4096, 8192)
# The controller plans with this per-step budget as its ceiling (serve_app/deployments/controller.py).
PLANNING_MAX_NUM_BATCHED_TOKENS = 8192
# Runs compared request for request were offered one rate, read back from JSON.
SAME_RATE_TOLERANCE = 1e-6
# Issue 19's thresholds.
GOODPUT_OF_BEST_GOAL = 0.95
KV_CAPACITY_TOLERANCE = 0.03
# "At least vLLM's defaults' goodput" allows this much below: settings that serve the same requests
# equally well differ by a request or two between runs.
GOODPUT_NOISE = 0.01
# A preset's goals count only at an offered load this near vLLM's defaults' steady capacity.
MIN_LOAD_OF_CAPACITY = 0.85
# The middle of a closed-loop run's completions, where every client is busy (not starting, not draining).
STEADY_COMPLETIONS = (0.2, 0.8)
# The open-loop rate search on vLLM's defaults: from the closed-loop figure up by this factor while
# they keep this SLO attainment, so that the settings are compared where they can differ.
RATE_SEARCH_STEP = 1.25
RATE_SEARCH_ATTAINMENT = 0.95
# An open-loop run's arrivals last at least this many times the preset's TTFT SLO: a shorter run cannot
# queue requests past a loose SLO however overloaded it is (run 3: batch's 30 s SLO held for every request
# of 30 s of arrivals at 2.2x the closed-loop rate, so the search stopped at its probe limit).
WINDOW_PER_TTFT_SLO = 2.0
# The arrival window of parts measured before it was recorded in them (runs 1-3: `--window-s 30`; the
# option's default then was 45).
_WINDOW_OPTION = re.compile(r"--window-s[ =]([\d.]+)")
UNRECORDED_WINDOW_S = 45.0


def arrival_window_s(window_s: float, ttft_slo_s: float) -> float:
    """A preset's open-loop arrival window: `window_s`, or WINDOW_PER_TTFT_SLO x its TTFT SLO if longer."""
    return max(window_s, WINDOW_PER_TTFT_SLO * ttft_slo_s)


def part_window_s(part: Mapping[str, Any]) -> float:
    """The arrival window a part's open-loop runs used: recorded, else its measure command's --window-s."""
    if part.get("window_s") is not None:
        return float(part["window_s"])
    for command in part.get("commands") or []:
        if " measure " in f" {command} " and (match := _WINDOW_OPTION.search(command)):
            return float(match.group(1))
    return UNRECORDED_WINDOW_S


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
                       kv_sizing=KV_SIZING_BY_POLICY[policy], engine_at_ceiling=policy in ADAPTIVE_POLICIES)
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
            "tpot_p50_s": stats["tpot_s"]["p50"], "tpot_p99_s": stats["tpot_s"]["p99"],
            "slo_missed": ({kind: n / sent for kind, n in stats["slo_misses"].items()}
                           if sent and "slo_misses" in stats else None)}


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


def steady_request_rate(end_times_s: Sequence[float], share: tuple[float, float] = STEADY_COMPLETIONS) -> float | None:
    """Completions per second between the `share` quantiles of a closed-loop run's completion times: its
    rate while every client is busy. The whole run's rate undercounts capacity by its start and its tail
    (a burst of 400 requests measured 30 req/s where the engine kept up with more)."""
    ends = sorted(end_times_s)
    first, last = int(len(ends) * share[0]), int(len(ends) * share[1]) - 1
    if last <= first or ends[last] <= ends[first]:
        return None
    return (last - first) / (ends[last] - ends[first])


def _bracket(probes: Sequence[Mapping[str, Any]]) -> tuple[float | None, float | None]:
    """The lowest probed rate at which vLLM's defaults fell short of RATE_SEARCH_ATTAINMENT, and the
    highest below it at which they did not (None where there is none)."""
    short = [p["rate_rps"] for p in probes if p["slo_attainment"] < RATE_SEARCH_ATTAINMENT]
    high = min(short) if short else None
    met = [p["rate_rps"] for p in probes if p["slo_attainment"] >= RATE_SEARCH_ATTAINMENT
           and (high is None or p["rate_rps"] < high)]
    return (max(met) if met else None), high


def next_probe_rate(probes: Sequence[Mapping[str, Any]], start_rps: float, max_probes: int) -> float | None:
    """The next open-loop rate to offer vLLM's defaults, or None when the search is over.

    Up by RATE_SEARCH_STEP while they meet the SLO for RATE_SEARCH_ATTAINMENT of requests, down by it
    while they do not, then once between the last rate met and the first fallen short (their geometric
    mean), so that the settings are compared just past the edge, not deep in an overload (H200 run 2's
    interactive rate, 0.9x the closed loop's, left vLLM's defaults 69% of requests); at most `max_probes`.

    Why search: a batching engine's latency stays flat until it saturates, so below vLLM's defaults'
    limit every setting with enough sequences meets the SLO and ties (H200 run 2: the mixed workload at
    0.9x its closed-loop rate ran 160-200 requests at the closed loop's token rates, and every setting
    from 238 sequences up met the SLO for every request).
    """
    if not probes:
        return start_rps if max_probes > 0 else None
    if len(probes) >= max_probes:
        return None
    met, short = _bracket(probes)
    if short is None:
        return met * RATE_SEARCH_STEP
    if met is None:
        return short / RATE_SEARCH_STEP
    return math.sqrt(met * short) if short / met > RATE_SEARCH_STEP ** 0.5 * 1.001 else None


def carried_over(earlier: Mapping[str, Any], window_s: float) -> dict[str, Any]:
    """What a preset part takes from an earlier run of the same workload on the same GPU kind: its
    closed-loop capacity, its probes, and its row of vLLM's defaults as one more probe at its rate
    (a run at vLLM's defaults on the same requests is what a probe is), so that a new machine spends
    no device time on what is known. Probes only if they had the same arrival window (`window_s`):
    attainment under overload depends on how long the overload lasts."""
    if part_window_s(earlier) != window_s:
        return {"capacity": earlier["capacity"], "rate_probes": []}
    probes = list(earlier.get("rate_probes") or [])
    default = row_for(earlier.get("rows") or [], vllm_default_plan().to_dict())
    if default is not None and earlier.get("rate_rps") is not None and \
            all(p["rate_rps"] != earlier["rate_rps"] for p in probes):
        probes.append({**default, "rate_rps": earlier["rate_rps"]})
    # Marked: guides the search, but is not taken as this run's row (another machine measured it).
    probes = sorted(({**p, "carried": True} for p in probes), key=lambda p: p["rate_rps"])
    return {"capacity": earlier["capacity"], "rate_probes": probes}


def searched_rate(probes: Sequence[Mapping[str, Any]]) -> float | None:
    """The lowest probed rate at which vLLM's defaults fell short of RATE_SEARCH_ATTAINMENT (where the
    settings rank), else the highest probed; None before any probe."""
    if not probes:
        return None
    _, short = _bracket(probes)
    return short if short is not None else max(p["rate_rps"] for p in probes)


def goodput(row: Mapping[str, Any]) -> float:
    """Requests within the SLO per second of offered load (rate x SLO attainment). Every setting of a
    preset is sent the same requests, so this ranks them by how many met the SLO; the driver's own
    goodput divides by the run's length, drain included, which moves with the slowest request."""
    if row.get("rate_rps") is not None and row.get("slo_attainment") is not None:
        return row["rate_rps"] * row["slo_attainment"]
    return row["goodput_rps"]


def best_row(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return max(rows, key=goodput, default=None)


# ---- goals ------------------------------------------------------------------------------------------
def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def load_of_capacity(part: Mapping[str, Any]) -> float | None:
    """The preset's offered rate over vLLM's defaults' steady closed-loop rate; None where that was not
    measured (run 1 took a 400-request burst's rate, well below what the engine sustains)."""
    steady = (part.get("capacity") or {}).get("steady_request_rps")
    return part["rate_rps"] / steady if steady and part.get("rate_rps") else None


def ranks_settings(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether some setting's goodput fell short of the best by more than run-to-run noise: where none
    did, the load ranks nothing (H200 run 2: at 0.9x the closed-loop rate of the mixed and batch
    workloads every setting from 238 sequences up served every request within its SLO)."""
    best = best_row(rows)
    return best is not None and any(goodput(row) < (1 - GOODPUT_NOISE) * goodput(best) for row in rows)


def defaults_fall_short(part: Mapping[str, Any]) -> bool:
    """vLLM's defaults met the SLO for fewer requests than the rate search holds them to: the load is at their
    capacity within the SLO, whatever the closed-loop rate. A tight TTFT makes that capacity well under the
    closed-loop one: on an H200 (interactive preset, TTFT SLO 0.5 s) the closed loop completed 47.7 req/s
    with a TTFT p50 of 1.3 s, and open loop at 38.4 req/s (0.80x) vLLM's defaults met the SLO for 89%."""
    default = _vllm_default_row(part)
    attainment = (default or {}).get("slo_attainment")
    return attainment is not None and attainment < RATE_SEARCH_ATTAINMENT


def _at_load(part: Mapping[str, Any]) -> tuple[str, bool]:
    """How the preset's load reads in a goal's name, and whether its goals count: near vLLM's defaults' steady
    closed-loop rate, or where they already fall short of the SLO (`defaults_fall_short`), and where the
    settings rank (`ranks_settings`)."""
    load = load_of_capacity(part)
    heavy = load is not None and (load >= MIN_LOAD_OF_CAPACITY or defaults_fall_short(part))
    near_capacity = heavy and ranks_settings(part.get("rows") or [])
    return ("at a load not compared with a steady capacity: not counted" if load is None else
            f"at {load:.2f}x the closed-loop rate" + (
                f", below {MIN_LOAD_OF_CAPACITY:g}x with vLLM's defaults within the SLO: not counted" if not heavy else
                "" if near_capacity else ", where no setting fell short of the best by more than noise: not counted")
            ), near_capacity


def _vllm_default_row(part: Mapping[str, Any]) -> Mapping[str, Any] | None:
    rows = part.get("rows") or []
    return next((row_for(rows, p) for p in part.get("plans") or [] if p["label"] == VLLM_DEFAULT), None)


def _against_best_and_default(name: str, ours: Mapping[str, Any] | None, part: Mapping[str, Any],
                              counted: bool) -> list[dict]:
    best, default = best_row(part.get("rows") or []), _vllm_default_row(part)
    if ours is None or best is None or default is None:
        return [goal(f"{name}: its, the sweep's and vLLM's defaults' runs measured", False, True, False)]
    ours_good, best_good = goodput(ours), goodput(best)
    of_best = ours_good / best_good if best_good > 0 else None
    return [goal(f"{name}: goodput over the sweep's best (max_num_seqs {best['max_num_seqs']}, budget "
                 f"{best['max_num_batched_tokens']}: {best_good:.3f} req/s)", _rounded(of_best),
                 f">= {GOODPUT_OF_BEST_GOAL:g}", counted and of_best is not None and of_best >= GOODPUT_OF_BEST_GOAL),
            _against_default(name, ours, default, counted)]


def _against_default(name: str, ours: Mapping[str, Any], default: Mapping[str, Any], counted: bool = True) -> dict:
    """Our run's goodput against vLLM's defaults' on the same requests, at most run-to-run noise below."""
    ours_good, default_good = goodput(ours), goodput(default)
    floor = (1 - GOODPUT_NOISE) * default_good
    return goal(f"{name}: goodput (req/s) against vLLM's defaults' {default_good:.3f} (at most "
                f"{GOODPUT_NOISE:.0%} below: run-to-run noise)", _rounded(ours_good), f">= {floor:.3f}",
                counted and ours_good >= floor)


def _is_adaptive(label: str) -> bool:
    return label.removeprefix("controller:") in ADAPTIVE_POLICIES


def preset_goals(preset: str, part: Mapping[str, Any]) -> list[dict]:
    """Each engine-only controller plan's goodput against the sweep's best and against vLLM's defaults,
    counted only at a load near capacity where some setting falls short: below it every setting with
    enough sequences meets the SLO and ties. An adaptive policy's engine runs vLLM's default sequences
    and its router window decides the batch, so its row is our app's run (`app_goals`), not a sweep row."""
    at_load, counted = _at_load(part)
    return [g for plan in part.get("plans") or [] if plan["label"] != VLLM_DEFAULT and not _is_adaptive(plan["label"])
            for g in _against_best_and_default(
                f"{preset} {at_load}: {plan['label']} (max_num_seqs {plan['max_num_seqs']}, budget "
                f"{plan['max_num_batched_tokens']})", row_for(part.get("rows") or [], plan), part, counted)]


def same_rate(a: float | None, b: float | None) -> bool:
    """Two runs offered one rate: the fp8-kv part takes it from preset-mixed's part, so it matches to the
    float's last digits (read back from JSON)."""
    return a is not None and b is not None and abs(a - b) <= SAME_RATE_TOLERANCE * max(abs(a), abs(b))


def app_goals(preset: str, part: Mapping[str, Any], app_run: Mapping[str, Any] | None) -> list[dict]:
    """Our app (one replica, the default `adaptive` policy: the engine at its memory ceiling, the router's
    window over it) on the preset's workload at the rate its sweep ran at, against the sweep's best and
    vLLM's defaults; unmet where it was not run, or was run at another rate (not request for request)."""
    at_load, counted = _at_load(part)
    name = f"{preset} {at_load}: our app ({DEFAULT_POLICY} policy, FP16 KV)"
    rate = part.get("rate_rps")
    if app_run is not None and not same_rate(app_run.get("rate_rps"), rate):
        return [goal(f"{name}: run at the sweep's rate ({rate} req/s)", app_run.get("rate_rps"), rate, False)]
    return _against_best_and_default(name, app_run, part, counted)


# The sustained part: vLLM's defaults and our app under the same long run of arrivals (who -> rate -> row).
SUSTAINED_WHO = ("vllm-defaults", "ours-fp16")


def sustained_goals(part: Mapping[str, Any]) -> list[dict]:
    """Per offered rate of the sustained part, our app's goodput against vLLM's defaults' on the same requests
    (the mixed preset, one arrival window long enough to pass the ramp: a 30 s run is mostly the ramp to
    the load, as the calibrated simulator shows, so rows of the presets' sweeps judge the start of an
    overload); unmet where either was not run."""
    runs = part.get("runs") or {}
    vllm, ours = runs.get(SUSTAINED_WHO[0]) or {}, runs.get(SUSTAINED_WHO[1]) or {}
    goals = []
    for key in sorted(set(vllm) | set(ours), key=float):
        name = (f"sustained {FP8_KV_PRESET} ({part.get('window_s', 0):g} s of arrivals at {float(key):g} req/s): "
                f"our app ({DEFAULT_POLICY} policy, FP16 KV)")
        if key not in vllm or key not in ours:
            goals.append(goal(f"{name} and vLLM's defaults both measured", False, True, False))
            continue
        goals.append(_against_default(name, ours[key], vllm[key]))
    return goals


@dataclass(frozen=True)
class KvCheck:
    """One engine's KV cache: what the controller predicts for its settings and what vLLM allocated."""

    engine: str
    kv_dtype: str  # fp16 | fp8
    predicted: int
    allocated: int
    source: str  # where `allocated` was read: /v1/controller/status or the engine's log

    @property
    def error(self) -> float:
        return self.predicted / self.allocated - 1

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "kv_dtype": self.kv_dtype, "predicted": self.predicted,
                "allocated": self.allocated, "relative_error": round(self.error, 5), "source": self.source}


KV_CACHE_LOG_LINE = re.compile(r"GPU KV cache size: ([\d,]+) tokens")


def allocated_kv_tokens(engine_log: str) -> int | None:
    """vLLM's KV allocation as its engine logs it (the last start's, where a log holds several)."""
    found = KV_CACHE_LOG_LINE.findall(engine_log)
    return int(found[-1].replace(",", "")) if found else None


def predicted_kv_tokens(shape: ModelShape, device: DeviceInfo, *, max_num_batched_tokens: int, kv_cache_dtype: str,
                        max_model_len: int, gpu_memory_utilization: float) -> int:
    """The controller's KV tokens for an engine with this per-step budget (its activations scale with it;
    the preset shapes the batch, not the KV cache, so any one will do)."""
    return plan_engine(shape, device, get_preset("mixed"), max_model_len=max_model_len,
                       gpu_memory_utilization=gpu_memory_utilization, max_num_batched_tokens=max_num_batched_tokens,
                       kv_cache_dtype=kv_cache_dtype).predicted_kv_tokens


def status_kv_checks(engine: str, kv_dtype: str, status: Mapping[str, Any]) -> list[KvCheck]:
    """The KV checks our app's /v1/controller/status reports (a replica each)."""
    return [KvCheck(engine, kv_dtype, replica["predicted_kv_tokens"], replica["actual_kv_tokens"],
                    "/v1/controller/status") for replica in status.values()
            if replica.get("predicted_kv_tokens") and replica.get("actual_kv_tokens")]


def kv_capacity_goals(checks: Sequence[KvCheck], dtypes: Sequence[str] = ("fp16", "fp8")) -> list[dict]:
    """Per KV dtype: the worst relative error of the controller's predicted KV tokens against vLLM's
    allocation over the engines measured."""
    goals = []
    for dtype in dtypes:
        of_dtype = [c for c in checks if c.kv_dtype == dtype]
        if not of_dtype:
            goals.append(goal(f"KV capacity {dtype}: an engine's allocation measured", False, True, False))
            continue
        worst = max(of_dtype, key=lambda c: abs(c.error))
        engines = ", ".join(f"{c.engine} {c.predicted:,} vs {c.allocated:,}" for c in of_dtype)
        goals.append(goal(f"KV capacity {dtype}: predicted vs vLLM's allocated tokens, worst relative error "
                          f"({engines})", _rounded(worst.error, 4), f"within +-{KV_CAPACITY_TOLERANCE:.0%}",
                          abs(worst.error) <= KV_CAPACITY_TOLERANCE))
    return goals


def app_run_of(preset: str, part: Mapping[str, Any], fp8: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """Our app's run on a preset's workload: the preset part's own (`app_run`: the app started for that
    preset, its window fresh, as each sweep row's engine is), else, for the fp8-kv part's preset, that
    part's FP16 open-loop run (it follows a closed-loop run there, which leaves the window cut)."""
    if part.get("app_run") is not None:
        return part["app_run"]
    return (((fp8 or {}).get("runs") or {}).get("fp16") or {}).get("goodput") if preset == FP8_KV_PRESET else None


def summary(presets: Mapping[str, Mapping[str, Any]], fp8: Mapping[str, Any] | None,
            chunked: Mapping[str, Any] | None, commands: Sequence[str], gpu: str,
            kv_checks: Sequence[KvCheck] = (), sustained: Mapping[str, Any] | None = None,
            expected_presets: Sequence[str] = ()) -> dict[str, Any]:
    """summary.json: the goals, and per preset its plans, best sweep point and Pareto front.

    The goals judge the controller's plan: the default policy's (`DEFAULT_POLICY`, our app's run). The other
    policies a config may choose are judged the same way under `other_policies`, not as goals: they are
    the alternatives the default was chosen over (`memory_budget`, every sequence at p95 x p95, lost on
    every ranked preset but interactive), kept for what they guarantee (no preemption). A preset of
    `expected_presets` with no part is an unmet goal."""
    app_runs = {name: app_run_of(name, part, fp8) for name, part in presets.items()}
    goals = [g for name, part in presets.items() for g in app_goals(name, part, app_runs.get(name))]
    goals += [goal(f"{name}: the sweep and our app measured", False, True, False)
              for name in expected_presets if name not in presets]
    other_policies = [g for name, part in presets.items() for g in preset_goals(name, part)]
    goals += kv_capacity_goals(kv_checks)
    if sustained is not None:
        goals += sustained_goals(sustained)
    table = {name: {"rate_rps": part.get("rate_rps"), "load_of_capacity": load_of_capacity(part),
                    "capacity": part.get("capacity"), "rate_probes": part.get("rate_probes"),
                    "plans": part.get("plans"),
                    "best": best_row(part.get("rows") or []),
                    "pareto": [_key(r).to_dict() for r in pareto_front(part.get("rows") or [])]}
             for name, part in presets.items()}
    chunked_rows = (chunked or {}).get("rows") or []
    controller_budget = (chunked or {}).get("controller_budget")
    front = [r["max_num_batched_tokens"] for r in chunked_prefill_front(chunked_rows)]
    return {"gpu": gpu, "commands": list(commands), "goals": goals, "other_policies": other_policies, "presets": table,
            "chunked_prefill": {"rows": chunked_rows, "controller_budget": controller_budget,
                                "front_budgets": front, "controller_budget_on_front": controller_budget in front
                                if chunked_rows else None},
            "fp8_kv": (fp8 or {}).get("runs"), "kv_capacity": [c.to_dict() for c in kv_checks],
            "sustained": {"window_s": sustained.get("window_s"), "rates_rps": sustained.get("rates_rps"),
                          "runs": sustained.get("runs")} if sustained is not None else None}


# ---- our app for the fp8-kv part --------------------------------------------------------------------
def with_sections(config: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """`config` with each of `sections`' fields set in its section (e.g. {"http": {"ingress_replicas": 2}}),
    the section's other fields kept; a section `config` lacks is added."""
    result = dict(config)
    for name, fields in sections.items():
        result[name] = {**(result.get(name) or {}), **fields}
    return result


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
