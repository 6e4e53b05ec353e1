"""The config's `router:` section: the router's tuning, validated at load. The pure router core
(`RouterCore`) reads this very type, so each default is stated here once."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, computed_field, model_validator

from serve_app.policy.window_controller import (DEFAULT_WINDOW_CONTROLLER, WINDOW_CONTROLLERS, WindowTuning,
                                                window_tuning)
from serve_app.strict_model import StrictModel

Routing = Literal["least_outstanding_tokens", "first_block_affinity", "approximate_prefix", "precise_prefix"]
# The routings that score replicas by a cache index (`serve_app.policy.cache_aware_choice`).
CACHE_INDEX_ROUTINGS = ("approximate_prefix", "precise_prefix")


class RouterSettings(StrictModel):
    routing: Routing = Field(
        "least_outstanding_tokens", description="Replica choice policy, by name: `least_outstanding_tokens` "
        "(power of two choices on outstanding tokens, the baseline); `first_block_affinity` (a prompt's first "
        "KV block picks a replica by rendezvous hashing, within `affinity_load_bound`; the old "
        "`prefix_affinity: true`); `precise_prefix` (replicas' KV cache events say which blocks each holds; "
        "cached prefix weighed against load, `cache_weight`/`load_weight`); `approximate_prefix` (the same "
        "scoring over a record of which prompts were sent where, for engines without cache events).",
    )
    stats_period_s: float = Field(0.5, gt=0, description="How often replicas report engine stats to routers.")
    window_tuning: WindowTuning = Field(
        default_factory=window_tuning, description="Adaptive batching: how each replica's in-flight window "
        "follows latency feedback. Written as `window_controller: <name>` (`aimd`: additive increase / "
        "multiplicative decrease with slow start; `fixed_ratio`: one factor up under target, one down over it) "
        "and `window_tuning: {knob: value}` (e.g. beta, increase_every, cooldown_s; unset knobs keep the "
        "controller's defaults), or as `window_tuning: {kind: <name>, ...}`. A knob the controller does not "
        "take fails at load. Empty: `aimd` with its defaults.",
    )
    initial_window: int | None = Field(
        None, ge=1, description="A new replica's window before any feedback; empty: its memory-derived cap "
        "(the KV cache holds that many at the observed lengths, so start there and cut on SLO misses).",
    )
    max_queue_size: int = Field(10_000, ge=1, description="Requests the global queue holds; beyond it: 429.")
    aging_interval_s: float | None = Field(
        30.0, gt=0, description="A queued request rises one class per this many seconds (no starvation); "
        "empty: strict priority only.",
    )
    newest_first_after: float | None = Field(
        1.0, gt=0, description="Once a caller's oldest queued request of a class has waited this many times the "
        "class's TTFT SLO (it will miss that target whatever happens next), the caller's newest requests of the "
        "class go first (adaptive LIFO): under a sustained overload the replicas keep serving requests within "
        "their SLO, and the late ones are served when it passes or refused at the queue deadline. Empty: "
        "oldest first always.",
    )
    lower_class_prefill_tokens: int | None = Field(
        None, ge=1, description="While the top class has requests queued or running, or admitted one in the last "
        "5 s, a request of a lower class starts on a replica only while the prompt tokens sent there that have "
        "not produced a first token yet, its own included, stay within this many (one such request may always "
        "start): a clump of lower-class prompts then cannot fill the engine's steps ahead of a top-class "
        "prompt (vLLM schedules the prefills it has begun before any waiting request, priorities or not). "
        "Unmeasured on a GPU yet; empty: off.",
    )
    initial_service_rate_rps: float = Field(
        4.0, gt=0, description="Completions per second assumed before any are measured (admission's prior).",
    )
    admission_warmup_completions: int = Field(
        16, ge=0, description="Completions measured before admission refuses on predicted wait (until then "
        "the queue deadline alone bounds waiting).",
    )
    headroom_fraction: float = Field(
        0.1, ge=0, le=1, description="Share of a replica's window the highest class may use on top of it, "
        "so its requests start at once on a full replica.",
    )
    drain_dispatch_share: float = Field(
        0.0, ge=0, le=1, description="While a replica has more requests in flight than its window lets start "
        "(a window cut), this share of its completions still starts a queued request there and the rest bring "
        "it down to the window. A cut then slows dispatch instead of stopping it until enough requests end "
        "(seconds, with requests living ~20 s), while every arrival waits. 0 (default): nothing starts until "
        "in flight is under the window; on the calibrated simulator 0.5 and 1 lost 4-9 points of SLO met under "
        "a sustained overload, where the cuts are for TPOT and draining slower keeps the batch slow.",
    )
    affinity_load_bound: float = Field(
        1.25, ge=1, description="Cache-driven routing (every `routing` but the baseline) sends a request to a "
        "replica for its cache only while that replica's outstanding tokens are at most this x the mean "
        "(bounded-load consistent hashing): no hot spot on a popular prefix.")
    # llm-d's default scheduling profile weighs its prefix-cache scorer 3 against its queue scorer 2.
    # Here too: a whole prompt cached (3) outweighs the full load range (2), so a holder wins unless it is
    # the busiest replica with under 2/3 of the prompt cached; `affinity_load_bound` caps the rest.
    cache_weight: float = Field(3.0, ge=0, description="`precise_prefix`/`approximate_prefix`: weight of "
                                "the share of the prompt a replica has cached.")
    load_weight: float = Field(2.0, ge=0, description="`precise_prefix`/`approximate_prefix`: weight of a "
                               "replica's outstanding tokens relative to the busiest candidate's.")
    approximate_cache_ttl_s: float = Field(
        300.0, gt=0, description="`approximate_prefix`: a prompt sent to a replica counts as cached there "
        "this long at most (within the replica's KV cache size, least recently sent forgotten first).")
    stale_replica_s: float = Field(10.0, gt=0, description="A replica silent this long is no longer routed to.")
    latency_samples: int = Field(1024, ge=1, description="Queue waits kept per class for the stats' percentiles.")

    @model_validator(mode="before")
    @classmethod
    def _controller_names_the_tuning(cls, data: Any) -> Any:
        """`window_controller: <name>` becomes the tuning's `kind`, so the knobs are checked against that
        controller's typed tuning at load (not in the router's refresh loop after start)."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        name = data.pop("window_controller", None)
        tuning = data.get("window_tuning")
        if name is not None and name not in WINDOW_CONTROLLERS:
            raise ValueError(f"window_controller: {name!r} is not one of {list(WINDOW_CONTROLLERS)}")
        if isinstance(tuning, Mapping) or (tuning is None and name is not None):
            tuning = dict(tuning or {})
            tuning.setdefault("kind", name or DEFAULT_WINDOW_CONTROLLER)
        elif tuning is None:
            data.pop("window_tuning", None)  # null (older rendered manifests): the default
            return data
        kind = tuning["kind"] if isinstance(tuning, dict) else getattr(tuning, "kind", None)
        if name is not None and kind != name:
            raise ValueError(f"window_tuning.kind {kind!r} is not the window_controller {name!r}")
        data["window_tuning"] = tuning
        return data

    @model_validator(mode="before")
    @classmethod
    def _old_prefix_affinity_is_routing(cls, data: Any) -> Any:
        """`prefix_affinity: true` (before `routing` named every policy) is `routing: first_block_affinity`;
        `false` said nothing beyond the default."""
        if not isinstance(data, Mapping) or "prefix_affinity" not in data:
            return data
        data = dict(data)
        if data.pop("prefix_affinity"):
            routing = data.get("routing", "least_outstanding_tokens")
            if routing not in ("least_outstanding_tokens", "first_block_affinity"):
                raise ValueError(f"prefix_affinity: true (now routing: first_block_affinity) contradicts "
                                 f"routing: {routing!r}")
            data["routing"] = "first_block_affinity"
        return data

    @computed_field(description="The window controller's name (`window_tuning.kind`).")  # type: ignore[prop-decorator]
    @property
    def window_controller(self) -> str:
        return self.window_tuning.kind
