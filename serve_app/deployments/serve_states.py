"""Which LLM replicas Ray Serve is stopping (downscale drain), read from the Serve controller; this replica's id.

Ray Serve 2.60 calls nothing in user code when it starts draining a replica: the replica finishes
its ongoing requests (up to graceful_shutdown_timeout_s) and only then runs `__del__`. Meanwhile it
still reports load, so our controller would keep it routable. The Serve controller knows the
replica is STOPPING from the first moment; this asks it.
"""
from __future__ import annotations

from serve_app.ray_compat import deployment_replica_states


async def stopping_replica_ids(app_name: str, deployment_name: str) -> set[str]:
    """Unique ids of `deployment_name`'s replicas in state STOPPING; empty when Serve cannot say
    (`ray_compat` logs why): Serve's view is an optimisation, stale load reports still retire the replica."""
    states = await deployment_replica_states(app_name, deployment_name)
    return {replica_id for replica_id, state in (states or {}).items() if state == "STOPPING"}


def own_replica_id() -> str:
    """This Serve replica's unique id; a made-up one outside Ray Serve (a unit test)."""
    import uuid

    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        return serve.get_replica_context().replica_id.unique_id
    except RayServeException:
        return f"local-{uuid.uuid4().hex[:8]}"
