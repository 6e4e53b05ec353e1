"""The router core's contract: the calls the router shell (`serve_app/deployments/dispatcher.py`,
whose door uses `admission_preview` and `record_door_refusals`) and the autoscaling simulator
(`autoscaling/simulator/cluster.py`) make, and the decisions they get back.

`serve_app.policy.router_core.RouterCore` implements it; callers hold a `RouterContract`, so none
reaches into (or overrides) the core's private methods. As vLLM's `v1/core/sched/interface.py`,
the contract is its own file and the implementation depends on it, not the other way round.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from serve_app.policy.admission import AdmissionPreview
from serve_app.policy.api_keys import Caller
from serve_app.policy.prefix_cache_index import CacheEvent

__all__ = ["AdmissionPreview", "Dispatch", "Refusal", "RouterContract"]


@dataclass(frozen=True)
class Refusal:
    """A request the router will not serve now; `retry_after_s` becomes the Retry-After header."""

    status: int  # 429: refused at the door; 503: waited past its class's queue deadline
    code: str
    message: str
    retry_after_s: int


@dataclass(frozen=True)
class Dispatch:
    """Send request `request_id` to replica `replica_id` now."""

    request_id: str
    replica_id: str


class RouterContract(ABC):
    """Rate limit, admission, global priority queue, per-replica windows and replica choice, driven
    with `now` by a single-threaded caller. Every request that `admit` accepts ends in exactly one of
    `take_dispatches` + `finish`/`cancel`, `expire`, or `cancel` while queued."""

    # ---- replicas ----
    @abstractmethod
    def set_replicas(self, caps: Mapping[str, int]) -> None:
        """The routable replicas and each one's memory-derived window cap (from the controller)."""

    @abstractmethod
    def replica_failed(self, replica_id: str) -> None:
        """Stop sending to a replica at once and for good; its running requests still end through `finish`."""

    @abstractmethod
    def apply_cache_events(self, replica_id: str, events: Iterable[CacheEvent]) -> None:
        """A replica's KV cache events, in the order it emitted them (kept by `routing: precise_prefix`)."""

    @abstractmethod
    def set_cache_capacity(self, replica_id: str, blocks: int, block_size: int) -> None:
        """A replica's KV cache size (vLLM's num_gpu_blocks and block_size): bounds its part of the index."""

    # ---- admission ----
    @abstractmethod
    def admit(self, request_id: str, class_name: str, caller: Caller, cost_tokens: int, now: float,
              prefix_key: int | None = None, prefix_blocks: tuple[int, ...] = (),
              prompt_tokens: int | None = None, first_token_seen: bool = True,
              replica_id: str | None = None) -> Refusal | None:
        """Queue the request, or say why not. `prefix_key`: the first block's hash (`first_block_affinity`);
        `prefix_blocks`: the prompt's chained block keys (`prefix_blocks.block_keys`; the cache-index routings);
        `first_token_seen`: the caller will report its first token (`first_token`), as for a streamed answer;
        `replica_id`: the only replica that can serve it (the holder of a stored response it continues)."""

    @abstractmethod
    def admission_preview(self, now: float) -> dict[str, AdmissionPreview | None]:
        """Per class, how many more requests `admit` would take now before refusing for overload."""

    @abstractmethod
    def record_door_refusals(self, counts: Mapping[str, int]) -> None:
        """Overload refusals answered at the ingress's door, booked per class."""

    # ---- dispatch and expiry ----
    @abstractmethod
    def take_dispatches(self, now: float) -> list[Dispatch]:
        """Queued requests to send now, in priority order, each to a replica with window room."""

    @abstractmethod
    def expire(self, now: float, ahead_s: float = 0.0) -> list[tuple[str, Refusal]]:
        """Queued requests past their class's queue deadline (within `ahead_s`) or shed, each with its 503."""

    # ---- completion ----
    @abstractmethod
    def first_token(self, request_id: str, now: float) -> None:
        """A dispatched request's first token reached the caller: its prompt is no longer being prefilled."""

    @abstractmethod
    def finish(self, request_id: str, now: float, *, ok: bool, ttft_s: float | None = None,
               tpot_s: float | None = None, prompt_tokens: int = 0, cached_prompt_tokens: int = 0,
               engine_tpot_s: float | None = None) -> None:
        """A dispatched request ended; its latencies (as the replica measured them, and the engine's recent
        inter-token time as it ended) steer the window, and its prompt tokens found in the engine's prefix
        cache count towards the measured hit rate."""

    @abstractmethod
    def cancel(self, request_id: str, now: float | None = None) -> None:
        """The client left: drop the request from the queue, or free its slot if it was dispatched."""

    # ---- observability ----
    @property
    @abstractmethod
    def running_count(self) -> int:
        """Requests dispatched and not yet ended."""

    @property
    @abstractmethod
    def routable_count(self) -> int:
        """Replicas the core may send to."""

    @abstractmethod
    def queue_depth_by_class(self) -> dict[str, int]:
        """Queued requests per class, highest class first (cheap: the simulator reads it every second)."""

    @abstractmethod
    def stats(self, now: float | None = None) -> dict[str, Any]:
        """Counters per class and replica (and, with `now`, recent replica-measured TTFT per class)."""
