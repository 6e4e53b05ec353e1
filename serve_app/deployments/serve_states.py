"""Which LLM replicas Ray Serve is stopping (downscale drain), read from the Serve controller.

Ray Serve 2.60 calls nothing in user code when it starts draining a replica: the replica finishes
its ongoing requests (up to graceful_shutdown_timeout_s) and only then runs `__del__`. Meanwhile it
still reports load, so our controller would keep it routable. The Serve controller knows the
replica is STOPPING from the first moment; this asks it.
"""
from __future__ import annotations

import logging

logger = logging.getLogger("serve_app.controller")


async def stopping_replica_ids(app_name: str, deployment_name: str) -> set[str]:
    """Unique ids of `deployment_name`'s replicas in state STOPPING (empty if Serve cannot say)."""
    try:
        from ray.serve.context import _get_global_client

        controller = _get_global_client()._controller
        details = await controller.get_deployment_details.remote(app_name, deployment_name)
        return {replica.replica_id for replica in details.replicas if str(replica.state.value) == "STOPPING"}
    except Exception as error:  # Serve's view is an optimisation; stale reports still retire the replica
        logger.warning("cannot read replica states from Serve: %s", type(error).__name__)
        return set()
