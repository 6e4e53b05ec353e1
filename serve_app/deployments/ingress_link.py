"""The replica-to-ingress leg: response parts go back, batched, to the ingress replica holding the HTTP
connection (`serve_app.delivery`), addressed by its id through `TargetedRequestRouter`."""
from __future__ import annotations

from typing import Any

from ray import serve

from serve_app.delivery import Abandoned, Batch, Outbox


def outbox_to_ingress(ingress_name: str, on_abandoned: Abandoned | None = None,
                      first_parts_own_call: bool = True) -> Outbox:
    """An `Outbox` sending to deployment `ingress_name` of this replica's own application
    (`http.first_parts_own_call`: see `Outbox`)."""
    deliver: Any = None

    async def send(ingress_replica: str, batch: Batch) -> list[str] | None:
        nonlocal deliver
        if deliver is None:  # the first delivery, not __init__: the ingress may be deployed after this replica
            handle = serve.get_deployment_handle(ingress_name, app_name=serve.get_replica_context().app_name)
            deliver = handle.options(method_name="deliver")  # once: `handle.deliver` builds new options per call
        return await deliver.remote(batch, target_replica=ingress_replica)

    return Outbox(send, on_abandoned=on_abandoned, first_parts_own_call=first_parts_own_call)
