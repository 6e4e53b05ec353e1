"""Direct delivery's connection (`serve_app.direct_link`) over real sockets on localhost: a run's parts come
before its summary, a cancelled run is cancelled on the replica, a lost connection fails its runs, a gone
ingress makes the replica's sends fail and its runs abandoned, and a connection without the replica's token
is refused."""
from __future__ import annotations

import asyncio
import dataclasses

import pytest

from serve_app.delivery import Inbox, Outbox
from serve_app.delivery_pull import IngressGone
from serve_app.direct_link import DirectAddress, DirectClient, DirectServer, ReplicaConnectionLost
from serve_app.generation import ResponsePart


@dataclasses.dataclass
class Request:
    request_id: str
    parts: int = 3
    hold: bool = False


class Replica:
    """A stand-in replica: its runs write `parts` parts through a real `Outbox` to the server's `send`."""

    def __init__(self) -> None:
        self.forgotten: list[tuple[str, list[str]]] = []
        self.cancelled: list[str] = []
        self.server = DirectServer("replica-a", lambda ingress_id, ids: self.forgotten.append((ingress_id, ids)))
        self.outbox = Outbox(self.server.send)
        self.release = asyncio.Event()

    async def run(self, request: Request, ingress_id: str) -> dict:
        try:
            seq = 0
            for i in range(request.parts):
                seq = self.outbox.put(ingress_id, request.request_id,
                                      ResponsePart(f"part{i}".encode(), done=i == request.parts - 1))
            if request.hold:
                await self.release.wait()
            await self.outbox.wait_sent(ingress_id, seq)
            if request.request_id == "fails":
                raise ValueError("bad request")
            return {"request_id": request.request_id, "ingress": ingress_id}
        except asyncio.CancelledError:
            self.cancelled.append(request.request_id)
            raise


async def started() -> tuple[Replica, DirectAddress]:
    replica = Replica()
    address = await replica.server.start("127.0.0.1", replica.run)
    return replica, address


def client_for(address: DirectAddress, inbox: Inbox, ingress_id: str = "ingress-1") -> DirectClient:
    async def resolve(replica_id: str) -> DirectAddress:
        return address
    return DirectClient(ingress_id, resolve, inbox.deliver)


async def soon(predicate) -> None:
    """Until `predicate()` holds (2 s at most): the other end acts in its own tasks."""
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.01)


async def held_run() -> tuple[Replica, DirectClient, asyncio.Task]:
    """A run the replica has started and holds (its parts queued, its summary not yet sent)."""
    replica, address = await started()
    inbox = Inbox()
    inbox.open("held")
    client = client_for(address, inbox)
    running = asyncio.create_task(client.run("replica-a", Request("held", hold=True)))
    await soon(lambda: replica.server.runs)
    return replica, client, running


async def drained(queue) -> list[bytes]:
    bodies = []
    while not queue.empty():
        bodies.append(queue.get_nowait().body)
    return bodies


def test_a_run_returns_its_summary_after_its_parts_reached_the_inbox():
    async def scenario():
        replica, address = await started()
        inbox = Inbox()
        queues = {rid: inbox.open(rid) for rid in ("r1", "r2")}
        client = client_for(address, inbox)
        summaries = await asyncio.gather(client.run("replica-a", Request("r1")), client.run("replica-a", Request("r2")))
        bodies = {rid: await drained(q) for rid, q in queues.items()}
        stats = client.stats()
        await client.close()
        await replica.server.close()
        return summaries, bodies, stats, replica.server.stats()

    summaries, bodies, stats, server_stats = asyncio.run(scenario())
    assert summaries == [{"request_id": "r1", "ingress": "ingress-1"}, {"request_id": "r2", "ingress": "ingress-1"}]
    assert bodies == {rid: [b"part0", b"part1", b"part2"] for rid in ("r1", "r2")}
    assert (stats["connections_opened"], server_stats["runs"]) == (1, 2)  # one connection carries both


def test_an_error_in_the_run_reaches_the_caller_as_raised():
    async def scenario():
        replica, address = await started()
        inbox = Inbox()
        inbox.open("fails")
        client = client_for(address, inbox)
        try:
            await client.run("replica-a", Request("fails"))
        finally:
            await client.close()
            await replica.server.close()

    with pytest.raises(ValueError, match="bad request"):
        asyncio.run(scenario())


def test_a_cancelled_run_is_cancelled_on_the_replica():
    async def scenario():
        replica, client, running = await held_run()
        running.cancel()
        await soon(lambda: replica.cancelled)
        await client.close()
        await replica.server.close()
        return replica.cancelled

    assert asyncio.run(scenario()) == ["held"]


def test_parts_of_requests_the_ingress_no_longer_reads_are_forgotten_on_the_replica():
    async def scenario():
        replica, address = await started()
        inbox = Inbox()  # nobody opened "left": its client is gone
        client = client_for(address, inbox)
        await client.run("replica-a", Request("left", parts=1))
        await soon(lambda: replica.forgotten)
        await client.close()
        await replica.server.close()
        return replica.forgotten

    assert asyncio.run(scenario()) == [("ingress-1", ["left"])]


def test_a_replica_that_goes_away_fails_the_runs_on_its_connection():
    async def scenario():
        replica, client, running = await held_run()
        await replica.server.close()  # the replica's process dies: its connections close
        try:
            await running
        finally:
            await client.close()

    with pytest.raises(ReplicaConnectionLost):
        asyncio.run(scenario())


def test_an_ingress_that_goes_away_makes_the_replicas_sends_to_it_fail_and_its_runs_abandoned():
    async def scenario():
        replica, client, _ = await held_run()
        await client.close()  # the ingress's process dies
        await soon(lambda: replica.forgotten)
        with pytest.raises(IngressGone):
            await replica.server.send("ingress-1", [("held", ResponsePart(b"late"))])
        await replica.server.close()
        return replica.forgotten

    assert asyncio.run(scenario()) == [("ingress-1", ["held"])]


def test_an_address_from_another_replica_or_no_listener_is_a_lost_replica():
    async def scenario(address: DirectAddress):
        client = client_for(address, Inbox())
        try:
            await client.run("replica-a", Request("r"))
        finally:
            await client.close()

    with pytest.raises(ReplicaConnectionLost, match="replica-b answered"):
        asyncio.run(scenario(DirectAddress("replica-b", "127.0.0.1", 1, b"x" * 16)))
    with pytest.raises(ReplicaConnectionLost, match="could not connect"):
        asyncio.run(scenario(DirectAddress("replica-a", "127.0.0.1", 1, b"x" * 16)))


def test_a_connection_without_the_replicas_token_is_refused_before_anything_is_unpickled():
    async def scenario():
        replica, address = await started()
        forged = dataclasses.replace(address, token=b"y" * 16)
        client = client_for(forged, Inbox())
        try:
            await client.run("replica-a", Request("r"))
        finally:
            await client.close()
            await replica.server.close()
        return replica.server.runs

    with pytest.raises(ReplicaConnectionLost):
        asyncio.run(scenario())


def test_a_replica_runs_a_direct_request_only_while_its_ingress_holds_a_stream_open_there():
    """A draining replica gets no new stream from Ray Serve: a run sent to it is refused (re-routed by the
    ingress as misrouted) instead of being cut when the replica stops; with the stream open it runs."""
    from serve_app.config import HttpSettings
    from serve_app.deployments.errors import MisroutedCall
    from serve_app.deployments.ingress_link import ReplicaDelivery

    async def scenario():
        delivery = ReplicaDelivery(HttpSettings(delivery="direct"), "Ingress", "replica-a")

        async def run(request: Request, ingress_id: str) -> dict:
            return {"request_id": request.request_id}

        await delivery.start(run, stream_wait_s=0.2)
        client = client_for(delivery.direct_address(), Inbox())
        try:
            with pytest.raises(MisroutedCall, match="no stream from ingress ingress-1"):
                await client.run("replica-a", Request("without-stream"))

            async def hold_stream():
                async for _ in delivery.stream("ingress-1", None):
                    pass
            streaming = asyncio.create_task(hold_stream())
            answer = await client.run("replica-a", Request("with-stream"))
            streaming.cancel()
            return answer
        finally:
            await client.close()
            await delivery.direct.close()

    assert asyncio.run(scenario()) == {"request_id": "with-stream"}


def test_a_replica_given_a_port_range_listens_on_its_first_free_port_and_runs_there():
    """`http.direct_ports`: a network that opens only a named range between nodes. A port taken (another replica
    on the node) is passed over; a range all taken is an error that names the setting."""
    import socket

    async def scenario(first: int, last: int) -> tuple[int, dict]:
        replica = Replica()
        address = await replica.server.start("127.0.0.1", replica.run, (first, last))
        assert replica.server.stats()["port"] == address.port  # what the replica reports (engine_stats)
        inbox = Inbox()
        inbox.open("r")
        client = client_for(address, inbox)
        try:
            summary = await client.run("replica-a", Request("r"))
        finally:
            await client.close()
            await replica.server.close()
        return address.port, summary

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        first = taken.getsockname()[1]
        port, summary = asyncio.run(scenario(first, first + 20))
        assert first < port <= first + 20 and summary == {"request_id": "r", "ingress": "ingress-1"}
        with pytest.raises(OSError, match=f"every port of http.direct_ports {first}-{first}"):
            asyncio.run(scenario(first, first))
