"""The replica-to-ingress leg: response parts go back, batched, to the ingress replica holding the HTTP
connection (`serve_app.delivery`). By push (`http.delivery: push`) the replica calls that ingress replica,
addressed by its id through `TargetedRequestRouter`; by pull the ingress replica holds a stream open to
the replica (`serve_app.delivery_pull`), addressed through the LLM replicas' router; direct
(`serve_app.direct_link`) sends the run and its parts over a TCP connection, and keeps the pull stream open
beside it (carrying nothing) so that a draining replica waits for this ingress's requests."""
from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.config import HttpSettings
from serve_app.delivery import Abandoned, Batch, Inbox, Outbox
from serve_app.delivery_pull import Collector, Mailboxes
from serve_app.direct_link import DirectAddress, DirectClient, DirectServer
from serve_app.deployments.errors import MisroutedCall
from serve_app.routing.targeted import TargetReplicaGone

# Direct: how long a run waits for its ingress's stream to this replica (opened beside it, a Ray call that
# Ray Serve does not route to a replica it drains) before the replica refuses it as misrouted.
STREAM_WAIT_S = 5.0


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


class ReplicaDelivery:
    """An LLM replica's side of delivery, by push, pull or direct as `http.delivery` says: `outbox` takes the
    response parts; `running_for` goes around each request; by pull (and direct), `stream` is the replica's
    `collect`; direct, `start` opens the replica's connection server."""

    def __init__(self, http: HttpSettings, ingress_name: str, replica_id: str, on_abandoned: Abandoned | None = None):
        self._replica_id = replica_id
        self._direct_ports = http.direct_ports
        self._runs_by_ingress: Counter[str] = Counter()
        self._on_abandoned = on_abandoned or (lambda request_ids: None)
        self.mailboxes: Mailboxes | None = None
        self.direct: DirectServer | None = None
        if http.delivery == "push":
            self.outbox = outbox_to_ingress(ingress_name, on_abandoned, http.first_parts_own_call)
            return
        self.mailboxes = Mailboxes(lambda ingress: self._runs_by_ingress[ingress] > 0)
        send = self.mailboxes.send
        if http.delivery == "direct":
            self.direct = DirectServer(replica_id, self.forget, self._on_abandoned)
            send = self.direct.send
        self.outbox = Outbox(send, on_abandoned=on_abandoned, first_parts_own_call=http.first_parts_own_call)

    async def start(self, run: Callable[[Any, str], Awaitable[Any]], stream_wait_s: float = STREAM_WAIT_S) -> None:
        """Direct: serve runs (`run(request, ingress_id)`, the replica's) on this node's address, each once
        its ingress holds a stream open here: Ray Serve keeps a replica it drains alive while a call to it is
        open, and opens no new one to it, so a run sent to a draining replica is refused and re-routed
        (`MisroutedCall`) rather than cut when the replica stops."""
        if self.direct is None:
            return
        mailboxes = self.mailboxes

        async def run_while_streaming(request: Any, ingress_id: str) -> Any:
            if not await mailboxes.stream_opens(ingress_id, stream_wait_s):
                raise MisroutedCall(f"LLM replica {self._replica_id} holds no stream from ingress {ingress_id} "
                                    "(it is draining, or the stream could not reach it)")
            return await run(request, ingress_id)

        await self.direct.start(ray.util.get_node_ip_address(), run_while_streaming, self._direct_ports)

    def forget(self, ingress_id: str, request_ids: list[str]) -> None:
        """Ingress replica `ingress_id` is alive and no longer reads these requests (with none: its heartbeat)."""
        self.heard_from(ingress_id)
        self._on_abandoned(request_ids)

    def direct_address(self) -> DirectAddress | None:
        return self.direct.address if self.direct is not None else None

    @contextlib.contextmanager
    def running_for(self, ingress_id: str) -> Iterator[None]:
        """Around a request answered to `ingress_id`: its stream stays open meanwhile."""
        self._runs_by_ingress[ingress_id] += 1
        try:
            yield
        finally:
            self._runs_by_ingress[ingress_id] -= 1
            if self._runs_by_ingress[ingress_id] <= 0:
                del self._runs_by_ingress[ingress_id]

    async def stream(self, ingress_id: str, target_replica: str | None) -> AsyncIterator[Batch]:
        if self.mailboxes is None:
            raise RuntimeError("this replica delivers by push (http.delivery: push)")
        if target_replica is not None and target_replica != self._replica_id:
            # The LLM replicas' router sends a call whose target is gone to another replica: this stream
            # would carry nothing the ingress expects from here.
            raise TargetReplicaGone(target_replica, seen=True)
        async for batch in self.mailboxes.stream(ingress_id):
            yield batch

    def heard_from(self, ingress_id: str) -> None:
        if self.mailboxes is not None:
            self.mailboxes.heard_from(ingress_id)

    def stats(self) -> dict[str, Any]:
        streams = None if self.mailboxes is None else {"opened": self.mailboxes.streams_opened,
                                                       "broken": self.mailboxes.streams_broken,
                                                       "ingresses": self.mailboxes.destinations}
        return {"delivery_streams": streams, "delivery_batches": self.outbox.batches_sent,
                "delivery_chunks": self.outbox.chunks_sent, "delivery_batches_failed": self.outbox.batches_failed,
                **({"direct": self.direct.stats()} if self.direct is not None else {})}


def collector_from_replicas(replicas: DeploymentHandle, ingress_id: str, inbox: Inbox) -> Collector:
    """Delivery by pull, ingress side: streams from the LLM replicas (their `collect`) into `inbox`."""
    streams = replicas.options(stream=True, method_name="collect")
    forget = replicas.options(method_name="forget")

    def open_stream(replica_id: str) -> AsyncIterator[Batch]:
        return streams.remote(ingress_id, target_replica=replica_id)

    async def forget_requests(replica_id: str, request_ids: list[str]) -> None:
        await forget.remote(ingress_id, request_ids, target_replica=replica_id)

    return Collector(open_stream, inbox.deliver, forget_requests)


class IngressDelivery:
    """An ingress replica's side of delivery by pull or direct: the pull streams (`collector`), and direct,
    the connections the runs and their parts take (`client`)."""

    def __init__(self, collector: Collector, client: DirectClient | None = None):
        self.collector = collector
        self.client = client

    def dispatcher_options(self) -> dict[str, Any]:
        """The `Dispatcher`'s: the stream from a replica open while a request runs there, and direct, how it runs."""
        return {"running_on": self.collector.running_on, **({"run_call": self.client.run} if self.client else {})}

    def stats(self) -> dict[str, Any]:
        return {**self.collector.stats(), **({"direct": self.client.stats()} if self.client is not None else {})}


def ingress_delivery(http: HttpSettings, replicas: DeploymentHandle, ingress_id: str,
                     inbox: Inbox) -> IngressDelivery | None:
    """None by push (the replicas call this ingress replica's `deliver`)."""
    if http.delivery == "push":
        return None
    collector = collector_from_replicas(replicas, ingress_id, inbox)
    if http.delivery == "pull":
        return IngressDelivery(collector)
    address = replicas.options(method_name="direct_address")

    async def resolve(replica_id: str) -> DirectAddress:
        return await address.remote(target_replica=replica_id)

    return IngressDelivery(collector, DirectClient(ingress_id, resolve, inbox.deliver))
