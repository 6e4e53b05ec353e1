"""Pure, deterministic routing policies (queueing, admission, batching windows, replica choice).

No Ray/vLLM imports and no wall clock: callers pass `now` and a seeded `random.Random`.
"""

from serve_app.policy.admission import AdmissionController, AdmissionDecision
from serve_app.policy.priority_classes import PriorityClass, PriorityClasses, UnknownPriorityClass
from serve_app.policy.priority_queue import PriorityRequestQueue, QueuedRequest, QueueFull
from serve_app.policy.rate_limit import RateLimiter
from serve_app.policy.replica_choice import ReplicaLoad, choose_replica, prefix_key_of, rendezvous_replica
from serve_app.policy.window_controller import (
    WINDOW_CONTROLLERS,
    AIMDController,
    AIMDTuning,
    FixedRatioController,
    FixedRatioTuning,
    WindowController,
    create_window_controller,
    reserved_headroom,
    window_tuning,
)

__all__ = [
    "WINDOW_CONTROLLERS",
    "AIMDController",
    "AIMDTuning",
    "AdmissionController",
    "AdmissionDecision",
    "FixedRatioController",
    "FixedRatioTuning",
    "PriorityClass",
    "PriorityClasses",
    "PriorityRequestQueue",
    "QueueFull",
    "QueuedRequest",
    "RateLimiter",
    "ReplicaLoad",
    "UnknownPriorityClass",
    "WindowController",
    "choose_replica",
    "create_window_controller",
    "prefix_key_of",
    "reserved_headroom",
    "rendezvous_replica",
    "window_tuning",
]
