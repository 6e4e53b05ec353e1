"""Discrete-event simulation of N replicas behind our real router policy, with an autoscaler.

Drives `serve_app.policy.router_core.RouterCore`, through its public contract
(`serve_app.policy.router_contract`), the way `serve_app/deployments/dispatcher.py` does
(admit -> take_dispatches on arrival; finish -> take_dispatches on completion; expire every
50 ms), feeds window caps the way the controller does (`next_window_cap` every 2 s), and calls
an autoscaler every `control_period_s`. New replicas are routable after `startup_delay_s`; a
replica scaled down leaves the router at once and stops when it has finished what it holds.
"""
from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from serve_app.policy.api_keys import Caller
from serve_app.policy.batch_controller import LengthWindow, WindowCapState, next_window_cap
from serve_app.policy.priority_classes import PriorityClasses
from serve_app.policy.router_contract import RouterContract
from serve_app.policy.router_core import RouterCore, RouterPolicy
from serve_app.statistics import meets_slo, tpot_s

from autoscaling.simulator.replica import EngineConfig, EngineRequest, Replica
from autoscaling.simulator.signals import Autoscaler, ClusterSignals, LookBack, WindowCounts
from autoscaling.simulator.step_model import StepModel
from autoscaling.simulator.workload import SimRequest

EXPIRY_PERIOD_S = 0.05  # as the router shell
CONTROLLER_PERIOD_S = 2.0  # replicas report lengths and preemptions to the controller this often


@dataclass(frozen=True)
class ClusterConfig:
    classes: PriorityClasses
    engine: EngineConfig = EngineConfig()
    router: RouterPolicy = RouterPolicy()
    initial_replicas: int = 1
    startup_delay_s: float = 180.0  # request to routable: node, image, weights, CUDA graphs
    control_period_s: float = 1.0
    look_back_s: float = 30.0  # averaging window of the signals
    drain_timeout_s: float = 600.0  # a stopping replica's requests still running then are aborted
    engine_priority: bool = True  # vLLM --scheduling-policy priority with the class as priority
    timeline_period_s: float = 5.0
    seed: int = 0


@dataclass
class RequestOutcome:
    """One request as the client saw it (times from the run's start)."""

    request: SimRequest
    status: int = 0  # 200 served, 429 refused, 503 expired, 500 aborted
    code: str | None = None  # the router's refusal code (overloaded, queue_full, shed_for_higher_priority, ...)
    first_token_s: float | None = None
    finish_s: float | None = None


@dataclass
class _Node:
    replica: Replica
    requested_s: float
    ready_s: float
    state: str = "starting"  # starting -> running -> draining -> stopped
    stopped_s: float | None = None
    lengths: LengthWindow = field(default_factory=LengthWindow)
    cap: WindowCapState | None = None
    held: dict[str, EngineRequest] = field(default_factory=dict)


@dataclass
class SimulationResult:
    outcomes: list[RequestOutcome]
    timeline: list[dict]
    gpu_seconds: float
    duration_s: float
    preemptions: int
    steps: int


class Cluster:
    def __init__(self, config: ClusterConfig, model: StepModel, autoscaler: Autoscaler | None = None) -> None:
        self._config = config
        self._model = model
        self._autoscaler = autoscaler
        self._core: RouterContract = RouterCore(config.classes, config.router, random.Random(config.seed))
        self._callers = {c.name: Caller(c.name, c.name) for c in config.classes}
        self._levels = {c.name: config.classes.level_of(c.name) for c in config.classes}
        self._nodes: dict[str, _Node] = {}
        self._ids = itertools.count()
        self._events: list[tuple[float, int, str, object]] = []
        self._seq = itertools.count()
        self._outcomes: dict[str, RequestOutcome] = {}
        self._placed: dict[str, str] = {}  # request id -> replica id
        self._look_back = LookBack(config.look_back_s)
        self._judged = WindowCounts(config.look_back_s)  # finished requests per class
        self._met = WindowCounts(config.look_back_s)  # ... that met their SLO
        self._arrived = WindowCounts(config.look_back_s)  # arrivals per class
        self._refused = WindowCounts(config.look_back_s)  # refused for capacity (429 or 503) per class
        self._timeline: list[dict] = []
        self._target = config.initial_replicas
        self._now = 0.0
        self._queued = 0
        self._arrivals_left = False

    # ---- events ----------------------------------------------------------------------------------
    def _push(self, t: float, kind: str, data: object = None) -> None:
        heapq.heappush(self._events, (t, next(self._seq), kind, data))

    def run(self, requests: Iterable[SimRequest], until_s: float) -> SimulationResult:
        """Simulate until every request has ended or `until_s`; returns per-request outcomes."""
        for _ in range(self._config.initial_replicas):
            self._add_node(0.0, ready_s=0.0)
        arrivals = iter(requests)
        self._next_arrival(arrivals)
        for kind, period in (("expire", EXPIRY_PERIOD_S), ("controller", CONTROLLER_PERIOD_S),
                             ("control", self._config.control_period_s), ("timeline", self._config.timeline_period_s)):
            self._push(period, kind, period)
        while self._events:
            t, _, kind, data = heapq.heappop(self._events)
            if t > until_s:
                break
            if kind in ("ready", "drain_deadline") and data.state == "stopped":
                continue
            self._now = t
            if kind == "step":
                self._on_step(data)
            elif kind == "arrival":
                self._on_arrival(data)
                self._next_arrival(arrivals)
            elif kind == "ready":
                self._on_ready(data)
            elif kind == "drain_deadline":
                self._abort_all(data)
            elif kind == "expire":
                self._on_expire()
            elif kind == "controller":
                self._on_controller()
            elif kind == "control":
                self._on_control()
            elif kind == "timeline":
                self._on_timeline()
            if kind in ("expire", "controller", "control", "timeline") and self._pending():
                self._push(t + data, kind, data)
        end = self._now
        gpu_s = sum((n.stopped_s if n.stopped_s is not None else end) - n.requested_s for n in self._nodes.values())
        return SimulationResult(list(self._outcomes.values()), self._timeline, gpu_s, end,
                                sum(n.replica.preemptions_total for n in self._nodes.values()),
                                sum(n.replica.steps_run for n in self._nodes.values()))

    def _pending(self) -> bool:
        """Periodic ticks go on while requests are still to come, queued or running."""
        return self._arrivals_left or bool(self._placed) or self._queued > 0

    def _next_arrival(self, arrivals) -> None:
        request = next(arrivals, None)
        self._arrivals_left = request is not None
        if request is not None:
            self._push(request.arrival_s, "arrival", request)

    # ---- requests --------------------------------------------------------------------------------
    def _on_arrival(self, request: SimRequest) -> None:
        outcome = self._outcomes[request.request_id] = RequestOutcome(request)
        self._arrived.add(self._now, request.class_name)
        refusal = self._core.admit(request.request_id, request.class_name, self._callers[request.class_name],
                                   request.prompt_len + request.output_len, self._now)
        if refusal is not None:
            outcome.status, outcome.code = refusal.status, refusal.code
            outcome.finish_s = self._now
            self._refused.add(self._now, request.class_name)
            return
        self._queued += 1
        self._pump()

    def _pump(self) -> None:
        idle: list[_Node] = []
        for dispatch in self._core.take_dispatches(self._now):
            self._queued -= 1
            outcome = self._outcomes[dispatch.request_id]
            node = self._nodes[dispatch.replica_id]
            req = outcome.request
            priority = self._levels[req.class_name] if self._config.engine_priority else 0
            engine_request = EngineRequest(req.request_id, req.prompt_len, req.output_len, priority, tag=outcome)
            node.held[req.request_id] = engine_request
            self._placed[req.request_id] = dispatch.replica_id
            node.replica.add(engine_request, self._now)
            if node.replica.step_end_s is None:
                idle.append(node)
        for node in idle:
            if node.replica.start_if_idle(self._now):
                self._push(node.replica.step_end_s, "step", node)

    def _on_step(self, node: _Node) -> None:
        replica = node.replica
        finished = replica.complete_step()
        for engine_request in finished:
            outcome: RequestOutcome = engine_request.tag
            outcome.status = 200
            outcome.first_token_s = engine_request.first_token_s
            outcome.finish_s = engine_request.finish_s
            self._end(node, engine_request, ok=True)
        if replica.step_end_s is not None:
            self._push(replica.step_end_s, "step", node)
        if finished:
            self._pump()
            self._maybe_stop(node)

    def _end(self, node: _Node, engine_request: EngineRequest, *, ok: bool) -> None:
        rid = engine_request.request_id
        node.held.pop(rid, None)
        self._placed.pop(rid, None)
        ttft = tpot = None
        if ok:
            # As the replica measures them (router queue excluded); the SLO below counts from arrival.
            ttft = engine_request.first_token_s - engine_request.arrival_s
            tpot = tpot_s(engine_request.finish_s - engine_request.arrival_s, ttft, engine_request.output_len)
            node.lengths.observe(engine_request.prompt_len, engine_request.output_len)
            outcome: RequestOutcome = engine_request.tag
            cls = self._config.classes.get(outcome.request.class_name)
            met = meets_slo(outcome.first_token_s - outcome.request.arrival_s, tpot, cls.ttft_slo_s, cls.tpot_slo_s)
            self._judged.add(self._now, cls.name)
            self._met.add(self._now, cls.name, int(met))
        self._core.finish(rid, self._now, ok=ok, ttft_s=ttft, tpot_s=tpot,
                          engine_tpot_s=node.replica.recent_inter_token_s(self._now) if ok else None)

    def _on_expire(self) -> None:
        for request_id, refusal in self._core.expire(self._now, ahead_s=EXPIRY_PERIOD_S):
            self._queued -= 1
            outcome = self._outcomes[request_id]
            outcome.status, outcome.code, outcome.finish_s = refusal.status, refusal.code, self._now
            self._refused.add(self._now, outcome.request.class_name)
        self._pump()

    # ---- replicas --------------------------------------------------------------------------------
    def _add_node(self, now: float, ready_s: float) -> None:
        replica_id = f"replica-{next(self._ids)}"
        node = _Node(Replica(replica_id, self._model, self._config.engine), requested_s=now, ready_s=ready_s)
        self._nodes[replica_id] = node
        if ready_s <= now:
            self._on_ready(node)
        else:
            self._push(ready_s, "ready", node)

    def _on_ready(self, node: _Node) -> None:
        if node.state != "starting":
            return
        node.state = "running"
        node.cap = WindowCapState(cap=self._config.engine.max_num_seqs)
        self._sync_router()
        self._pump()

    def _sync_router(self) -> None:
        self._core.set_replicas({rid: n.cap.cap for rid, n in self._nodes.items() if n.state == "running"})

    def router_stats(self) -> dict:
        """The router core's own counts (`RouterContract.stats`), e.g. to check them against the outcomes."""
        return self._core.stats(self._now)

    def _on_controller(self) -> None:
        """The controller's window caps from observed lengths and preemptions (serve_app's rule)."""
        engine = self._config.engine
        for node in self._nodes.values():
            if node.state == "running":
                node.cap = next_window_cap(node.cap, kv_tokens=engine.num_kv_blocks * engine.block_size,
                                           block_size=engine.block_size, lengths=node.lengths,
                                           preemptions_total=node.replica.preemptions_total,
                                           max_num_seqs=engine.max_num_seqs,
                                           kv_cache_usage=node.replica.kv_usage)
        self._sync_router()
        self._pump()

    def _on_control(self) -> None:
        running = [n for n in self._nodes.values() if n.state == "running"]
        self._look_back.add(self._now, {n.replica.replica_id: len(n.held) for n in running})
        if self._autoscaler is None:
            return
        target = max(0, int(self._autoscaler(self.signals())))
        self._scale_to(target)

    def signals(self) -> ClusterSignals:
        running = [n for n in self._nodes.values() if n.state == "running"]
        samples = self._judged.counts(self._now)
        met = self._met.counts(self._now)
        arrived = self._arrived.counts(self._now)
        refused = self._refused.counts(self._now)
        window = self._config.look_back_s
        ongoing = self._look_back.mean()
        return ClusterSignals(
            now=self._now, running_replicas=len(running), target_replicas=self._target,
            ongoing_requests={n.replica.replica_id: ongoing.get(n.replica.replica_id, 0.0) for n in running},
            total_ongoing_requests=self._look_back.mean_total(),
            queue_depth=self._core.queue_depth_by_class(),
            kv_cache_usage={n.replica.replica_id: n.replica.kv_usage for n in running},
            # statistics.attainment's share, from running counts: the window holds no per-request list.
            slo_attainment={name: met.get(name, 0) / samples[name] for name in samples}, slo_samples=samples,
            arrival_rate_rps=sum(arrived.values()) / window,
            class_arrival_rate_rps={name: n / window for name, n in arrived.items()},
            class_refused_rate_rps={name: n / window for name, n in refused.items()})

    def _scale_to(self, target: int) -> None:
        self._target = target
        live = [n for n in self._nodes.values() if n.state in ("starting", "running")]
        for _ in range(target - len(live)):
            self._add_node(self._now, self._now + self._config.startup_delay_s)
        if target >= len(live):
            return
        # Ray stops replicas that are still starting first, then (here) the least loaded.
        victims = sorted(live, key=lambda n: (n.state == "running", len(n.held), -n.requested_s))
        for node in victims[: len(live) - target]:
            node.state = "draining"
            self._push(self._now + self._config.drain_timeout_s, "drain_deadline", node)
            self._maybe_stop(node)
        self._sync_router()

    def _maybe_stop(self, node: _Node) -> None:
        if node.state == "draining" and not node.held:
            node.state, node.stopped_s = "stopped", self._now

    def _abort_all(self, node: _Node) -> None:
        for engine_request in list(node.held.values()):
            node.replica.abort(engine_request)
            outcome: RequestOutcome = engine_request.tag
            outcome.status, outcome.finish_s = 500, self._now
            self._end(node, engine_request, ok=False)
        self._maybe_stop(node)

    def _on_timeline(self) -> None:
        states = [n.state for n in self._nodes.values()]
        running = [n for n in self._nodes.values() if n.state == "running"]
        self._timeline.append({
            "t_s": self._now, "target": self._target, "running": states.count("running"),
            "starting": states.count("starting"), "draining": states.count("draining"),
            "queued": self._queued, "in_flight": len(self._placed),
            "kv_usage_mean": sum(n.replica.kv_usage for n in running) / len(running) if running else None})
