"""A ramp of closed-loop HTTP load (phases of N concurrent clients) and the replica count over time.

I/O on purpose (the autoscaling ramp test and `benchmarks/autoscaling_ramp.py` share it). Every
request asks for exactly `max_tokens` tokens (`ignore_eos`); it is *served* when it got a 200 with
all of them, *refused* on a clean OpenAI-shaped 429/503, and *lost* otherwise (5xx, cut stream,
connection error, short output).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import httpx


@dataclass(frozen=True)
class Phase:
    name: str
    concurrency: int
    min_s: float  # at least this long
    max_s: float  # at most this long
    until: Callable[[RampResult], bool] | None = None  # ends the phase (after min_s) once true


@dataclass
class Outcome:
    phase: str
    sent_s: float  # since the ramp began
    latency_s: float
    status: int  # 0: no HTTP answer
    result: str  # served | refused | lost
    detail: str = ""


@dataclass
class RampResult:
    outcomes: list[Outcome] = field(default_factory=list)
    replicas: list[tuple[float, int, int]] = field(default_factory=list)  # (t, running, all replicas)
    phases: list[tuple[str, float, float]] = field(default_factory=list)  # (name, start, end)

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o.result == result)

    def to_json(self) -> dict:
        return {"outcomes": [asdict(o) for o in self.outcomes], "replicas": self.replicas, "phases": self.phases,
                "served": self.count("served"), "refused": self.count("refused"), "lost": self.count("lost")}


def running_replicas(app_name: str, deployment: str = "LLMReplica") -> tuple[int, int]:
    """(RUNNING, all) replicas of the deployment per `serve.status()` (the driver must be connected to Ray)."""
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None or deployment not in app.deployments:
        return 0, 0
    states = app.deployments[deployment].replica_states
    return int(states.get("RUNNING", 0)), int(sum(states.values()))


async def _one(client: httpx.AsyncClient, url: str, body: dict, phase: str, t0: float) -> Outcome:
    sent = time.monotonic()
    try:
        response = await client.post(url, json=body)
    except httpx.HTTPError as error:
        return Outcome(phase, sent - t0, time.monotonic() - sent, 0, "lost", repr(error))
    latency = time.monotonic() - sent
    if response.status_code in (429, 503):
        shaped = "error" in _json(response)
        return Outcome(phase, sent - t0, latency, response.status_code, "refused" if shaped else "lost",
                       response.text[:200])
    if response.status_code != 200:
        return Outcome(phase, sent - t0, latency, response.status_code, "lost", response.text[:200])
    data = _json(response)
    tokens = (data.get("usage") or {}).get("completion_tokens")
    finish = (data.get("choices") or [{}])[0].get("finish_reason")
    if tokens != body["max_tokens"] or finish != "length":
        return Outcome(phase, sent - t0, latency, 200, "lost", f"{tokens} tokens, finish {finish}")
    return Outcome(phase, sent - t0, latency, 200, "served")


def _json(response: httpx.Response) -> dict:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def run_ramp(base_url: str, model: str, phases: list[Phase], app_name: str, *, max_tokens: int = 16,
                   prompt: str = "t10 t11 t12 t13", headers: dict[str, str] | None = None,
                   poll_s: float = 1.0, timeout_s: float = 300.0) -> RampResult:
    """Drive `phases` in order against `base_url`/v1/completions; sample the replica count every `poll_s`."""
    result = RampResult()
    t0 = time.monotonic()
    url = f"{base_url}/v1/completions"
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0}
    state = {"phase": phases[0].name, "concurrency": 0, "done": False}

    async def sample() -> None:
        while not state["done"]:
            running, total = await asyncio.to_thread(running_replicas, app_name)
            result.replicas.append((round(time.monotonic() - t0, 2), running, total))
            await asyncio.sleep(poll_s)

    async def worker(index: int, client: httpx.AsyncClient) -> None:
        while not state["done"]:
            if index >= state["concurrency"]:
                await asyncio.sleep(0.05)
                continue
            result.outcomes.append(await _one(client, url, body, state["phase"], t0))

    limits = httpx.Limits(max_connections=max(p.concurrency for p in phases) + 4)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, headers=headers or {}) as client:
        sampler = asyncio.create_task(sample())
        workers = [asyncio.create_task(worker(i, client)) for i in range(max(p.concurrency for p in phases))]
        for phase in phases:
            start = time.monotonic()
            state.update(phase=phase.name, concurrency=phase.concurrency)
            while True:
                await asyncio.sleep(0.5)
                elapsed = time.monotonic() - start
                if elapsed >= phase.max_s or (elapsed >= phase.min_s and (phase.until is None or phase.until(result))):
                    break
            result.phases.append((phase.name, round(start - t0, 2), round(time.monotonic() - t0, 2)))
        state["done"] = True
        await asyncio.gather(*workers)  # requests in flight finish and are counted
        await sampler
    return result


def held(result: RampResult, running: int, seconds: float) -> bool:
    """The last `seconds` of samples all show `running` RUNNING replicas and no other replica."""
    if not result.replicas or result.replicas[-1][0] - result.replicas[0][0] < seconds:
        return False
    now = result.replicas[-1][0]
    return all(r == running and total == running for t, r, total in result.replicas if t >= now - seconds)
