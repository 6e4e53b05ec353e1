"""The config's `router:` section: the router's tuning, validated at load. The pure router core
(`RouterCore`) reads this very type, so each default is stated here once."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, computed_field, model_validator

from serve_app.policy.window_controller import (DEFAULT_WINDOW_CONTROLLER, WINDOW_CONTROLLERS, WindowTuning,
                                                window_tuning)
from serve_app.strict_model import StrictModel


class RouterSettings(StrictModel):
    routing: Literal["least_outstanding_tokens"] = Field(
        "least_outstanding_tokens", description="Replica choice policy, by name."
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
    prefix_affinity: bool = Field(False, description="Send prompts sharing a first KV block to one replica "
                                  "(prefix caching) while it is at most `affinity_load_bound` x the mean load.")
    affinity_load_bound: float = Field(1.25, ge=1)
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

    @computed_field(description="The window controller's name (`window_tuning.kind`).")  # type: ignore[prop-decorator]
    @property
    def window_controller(self) -> str:
        return self.window_tuning.kind
