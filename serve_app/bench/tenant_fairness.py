"""Issue 17's goal measured on the pure router core: a heavy and a light caller in one priority class,
together twice what one replica serves. The light caller should be served about as much as it is alone.

A fake clock drives `RouterCore` as the router shell does (admit on arrival, expire and dispatch every
tick, finish after a fixed service time); no Ray, no engine. `benchmarks/tenant_fairness_sim.py` prints
it; `tests/unit/test_tenant_fairness.py` holds it to the goal.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from serve_app.policy.api_keys import Caller
from serve_app.policy.priority_classes import PriorityClass, PriorityClasses
from serve_app.policy.router_core import RouterCore, RouterPolicy

CLASS = "standard"
CLASSES = PriorityClasses([PriorityClass(CLASS, 0, ttft_slo_s=2.0, tpot_slo_s=0.5, queue_deadline_s=10.0)])


@dataclass(frozen=True)
class Workload:
    service_s: float = 1.0  # each request holds a window slot this long
    window: int = 4  # requests one replica runs at once: capacity = window / service_s
    overload: float = 2.0  # offered requests / capacity, both callers together
    heavy_to_light: float = 10.0  # ratio of the callers' arrival rates
    seconds: float = 120.0
    tick_s: float = 0.01
    seed: int = 0

    @property
    def capacity_rps(self) -> float:
        return self.window / self.service_s

    def rates_rps(self) -> tuple[float, float]:
        total = self.overload * self.capacity_rps
        light = total / (1 + self.heavy_to_light)
        return total - light, light


@dataclass(frozen=True)
class CallerOutcome:
    offered: int
    served: int
    refused: int  # 429 at admission
    expired: int  # 503 after the queue deadline


def simulate(workload: Workload, callers: dict[str, tuple[Caller, float]]) -> dict[str, CallerOutcome]:
    """Poisson arrivals per caller (name -> (caller, rate)); what became of each caller's requests."""
    core = RouterCore(CLASSES, RouterPolicy(initial_window=workload.window, headroom_fraction=0.0,
                                            aging_interval_s=None, initial_service_rate_rps=workload.capacity_rps,
                                            admission_warmup_completions=0, window_tuning={"slow_start": False}),
                      random.Random(workload.seed))
    core.set_replicas({"replica": workload.window})
    # One stream per caller, seeded by its name: the light caller's arrivals are the same alone and together.
    arrivals = sorted((t, name) for name, (_, rate) in callers.items()
                      for t in _poisson(random.Random(f"{workload.seed}:{name}"), rate, workload.seconds))
    counts = {name: {"offered": 0, "served": 0, "refused": 0, "expired": 0} for name in callers}
    owner: dict[str, str] = {}
    ends: list[tuple[float, str]] = []  # (finish time, request id), in start order = finish order
    next_arrival, tick = 0, 0
    while True:
        now = tick * workload.tick_s
        if now > workload.seconds and not ends and not core.queue_depth_by_class()[CLASS]:
            break
        while ends and ends[0][0] <= now:
            _, request_id = ends.pop(0)
            core.finish(request_id, now, ok=True)
            counts[owner[request_id]]["served"] += 1
        while next_arrival < len(arrivals) and arrivals[next_arrival][0] <= now:
            name = arrivals[next_arrival][1]
            request_id = f"{name}-{next_arrival}"
            next_arrival += 1
            owner[request_id] = name
            counts[name]["offered"] += 1
            if core.admit(request_id, CLASS, callers[name][0], 100, now) is not None:
                counts[name]["refused"] += 1
        for request_id, _ in core.expire(now, workload.tick_s):
            counts[owner[request_id]]["expired"] += 1
        for dispatch in core.take_dispatches(now):
            ends.append((now + workload.service_s, dispatch.request_id))
        tick += 1
    return {name: CallerOutcome(**c) for name, c in counts.items()}


def light_share(workload: Workload, heavy_weight: float = 1.0, light_weight: float = 1.0) -> dict[str, object]:
    """The light caller alone, with the heavy one (fair shares), and with the heavy one under one key (what
    a class with a single FIFO did before fair shares)."""
    heavy_rps, light_rps = workload.rates_rps()
    heavy = Caller("heavy", CLASS, weight=heavy_weight)
    light = Caller("light", CLASS, weight=light_weight)
    alone = simulate(workload, {"light": (light, light_rps)})["light"]
    together = simulate(workload, {"heavy": (heavy, heavy_rps), "light": (light, light_rps)})
    shared_key = Caller("shared", CLASS)
    one_fifo = simulate(workload, {"heavy": (shared_key, heavy_rps), "light": (shared_key, light_rps)})
    return {"alone": alone, "fair": together, "one_fifo": one_fifo,
            "light_served_vs_alone": together["light"].served / max(1, alone.served),
            "light_served_vs_alone_one_fifo": one_fifo["light"].served / max(1, alone.served)}


def _poisson(rng: random.Random, rate_rps: float, seconds: float) -> list[float]:
    times, t = [], rng.expovariate(rate_rps)
    while t < seconds:
        times.append(t)
        t += rng.expovariate(rate_rps)
    return times
