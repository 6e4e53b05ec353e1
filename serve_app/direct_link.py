"""Dispatch and delivery over one TCP connection per ingress replica and LLM replica (`http.delivery: direct`).

Why: a Ray Serve call costs milliseconds where a socket write costs a fraction of one (benchmarks/serve_hop.py
on 2 CPU cores: a handle call 2.1 ms to the callee's method, a streamed item 0.7 ms; the same over a TCP
connection between the same two replicas 0.2 and 0.2 ms), and a request's first token crosses two of them
(the call to the replica, its first part back). Ray still places the replicas, tells the ingress where each
one listens (`DirectAddress`, fetched by a Ray call), and keeps a drained replica alive while an ingress has
requests on it (the pull delivery's stream stays open beside the connection, carrying nothing); only each
request's bytes leave it.

Frames are a 4-byte length and a pickle, as Ray's own calls are pickles; a connection begins with the
replica's random token (given out with its address through Ray) and the ingress's id, checked before
anything is unpickled. Pure asyncio: `serve_app.deployments.ingress_link` wires it to the replicas.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import pickle
import secrets
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from serve_app.delivery import Batch, detached_task
from serve_app.delivery_pull import IngressGone
from serve_app.telemetry.log_names import service_logger

logger = service_logger("delivery")
LENGTH = struct.Struct("!I")
TOKEN_BYTES = 16
MAX_FRAME_BYTES = 1 << 30
MAX_ID_BYTES = 1024

RunCall = Callable[[Any, str], Awaitable[Any]]  # (GenerationRequest, ingress id) -> RunSummary
Forget = Callable[[str, list[str]], None]  # (ingress id, request ids nobody reads any more)


class ReplicaConnectionLost(ConnectionError):
    """The connection to an LLM replica broke or could not be made: the replica is taken as lost."""


@dataclass(frozen=True)
class DirectAddress:
    replica_id: str
    host: str
    port: int
    token: bytes


def encode_frame(kind: str, call_id: int, payload: Any) -> bytes:
    body = pickle.dumps((kind, call_id, payload), protocol=5)
    return LENGTH.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> tuple[str, int, Any]:
    (size,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
    if size > MAX_FRAME_BYTES:
        raise ConnectionError(f"frame of {size} bytes")
    return pickle.loads(await reader.readexactly(size))


def _hello(token: bytes, ingress_id: str) -> bytes:
    name = ingress_id.encode()
    return token + LENGTH.pack(len(name)) + name


def _sendable(error: BaseException) -> BaseException:
    """The exception itself when it pickles (the ingress sees what a Ray call would raise), else its text."""
    try:
        pickle.dumps(error)
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


class DirectServer:
    """LLM replica side: takes runs from ingress replicas' connections and writes their parts back (`send`, the
    replica's `Outbox`'s), in order on the connection, so a run's summary always follows its parts."""

    def __init__(self, replica_id: str, forget: Forget, abandon: Callable[[list[str]], None] | None = None):
        """`forget(ingress_id, ids)`: a live ingress no longer reads these; `abandon(ids)`: nobody will (its
        connection closed; `forget` when not given)."""
        self._replica_id = replica_id
        self._run: RunCall | None = None
        self._forget = forget
        self._abandon = abandon
        self._token = secrets.token_bytes(TOKEN_BYTES)
        self._writers: dict[str, asyncio.StreamWriter] = {}
        self._server: asyncio.Server | None = None
        self.address: DirectAddress | None = None
        self.connections_opened = 0
        self.runs = 0

    async def start(self, host: str, run: RunCall, ports: tuple[int, int] | None = None) -> DirectAddress:
        """Listen on `host` for ingress replicas' runs, each served by `run(request, ingress_id)`: on the first free
        port of `ports` (both ends included; a network that opens only that range between nodes), or on any
        free port the system picks (None)."""
        self._run = run
        self._server = await self._listen(host, ports)
        port = self._server.sockets[0].getsockname()[1]
        self.address = DirectAddress(self._replica_id, host, port, self._token)
        return self.address

    async def _listen(self, host: str, ports: tuple[int, int] | None) -> asyncio.Server:
        if ports is None:
            return await asyncio.start_server(self._serve, host, 0)
        first, last = ports
        for port in range(first, last + 1):
            try:
                return await asyncio.start_server(self._serve, host, port)
            except OSError:  # taken, e.g. by another LLM replica on this node
                continue
        raise OSError(f"LLM replica {self._replica_id}: every port of http.direct_ports {first}-{last} on {host} is "
                      "taken; widen the range to at least the LLM replicas one node runs")

    async def send(self, ingress_id: str, batch: Batch) -> None:
        writer = self._writers.get(ingress_id)
        if writer is None or writer.is_closing():
            raise IngressGone(f"no connection from ingress replica {ingress_id}")
        writer.write(encode_frame("parts", 0, batch))
        await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        runs: dict[int, tuple[asyncio.Task, str]] = {}  # call id -> (its task, its request id)
        ingress_id = None
        try:
            if not hmac.compare_digest(await reader.readexactly(TOKEN_BYTES), self._token):
                logger.warning("refused a connection without this replica's token")
                return
            (size,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
            if size > MAX_ID_BYTES:
                return
            ingress_id = (await reader.readexactly(size)).decode()
            self._writers[ingress_id] = writer  # a newer connection from the same ingress replaces the older
            self.connections_opened += 1
            while True:
                kind, call_id, payload = await read_frame(reader)
                if kind == "run":
                    task = detached_task(self._run_one(writer, ingress_id, call_id, payload, runs))
                    runs[call_id] = (task, getattr(payload, "request_id", ""))
                elif kind == "cancel" and call_id in runs:
                    runs[call_id][0].cancel()
                elif kind == "forget":
                    self._forget(ingress_id, payload)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, pickle.UnpicklingError):
            pass  # the ingress replica closed the connection or died
        finally:
            if ingress_id is not None and self._writers.get(ingress_id) is writer:
                del self._writers[ingress_id]
            if ingress_id is not None and runs:
                # Nobody reads these runs' answers any more: abandoned, as by pull, vLLM aborts them.
                gone = [request_id for _, request_id in runs.values()]
                if self._abandon is not None:
                    self._abandon(gone)
                else:
                    self._forget(ingress_id, gone)
            writer.close()

    async def _run_one(self, writer: asyncio.StreamWriter, ingress_id: str, call_id: int, request: Any,
                       runs: dict[int, tuple[asyncio.Task, str]]) -> None:
        self.runs += 1
        try:
            reply = encode_frame("summary", call_id, await self._run(request, ingress_id))
        except asyncio.CancelledError:
            return  # the ingress cancelled it (its client left) or is gone: no answer
        except Exception as error:
            reply = encode_frame("error", call_id, _sendable(error))
        finally:
            runs.pop(call_id, None)
        if not writer.is_closing():
            writer.write(reply)
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    def stats(self) -> dict[str, int]:
        return {"connections": len(self._writers), "connections_opened": self.connections_opened, "runs": self.runs,
                "port": self.address.port if self.address is not None else None}

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers.values()):
            writer.close()


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    calls: dict[int, asyncio.Future] = field(default_factory=dict)
    closed: bool = False
    reading: asyncio.Task | None = None


class DirectClient:
    """Ingress side: runs requests on LLM replicas over one connection each, opened on first use from the
    address `resolve` gives; parts go to `deliver` (the inbox), and the ids it no longer reads back to the
    replica. A connection that breaks fails its runs with `ReplicaConnectionLost`."""

    def __init__(self, ingress_id: str, resolve: Callable[[str], Awaitable[DirectAddress]],
                 deliver: Callable[[Batch], list[str]]):
        self._ingress_id = ingress_id
        self._resolve = resolve
        self._deliver = deliver
        self._connections: dict[str, _Connection] = {}
        self._opening: dict[str, asyncio.Task] = {}
        self._call_ids = itertools.count(1)
        self.connections_opened = 0
        self.connections_lost = 0

    async def run(self, replica_id: str, request: Any) -> Any:
        connection = await self._connection(replica_id)
        call_id = next(self._call_ids)
        answer = asyncio.get_running_loop().create_future()
        connection.calls[call_id] = answer
        try:
            connection.writer.write(encode_frame("run", call_id, request))
            return await answer
        except asyncio.CancelledError:
            if not connection.closed:  # the client left: the replica cancels the run, as a cancelled Ray call
                connection.writer.write(encode_frame("cancel", call_id, None))
            raise
        finally:
            connection.calls.pop(call_id, None)

    async def _connection(self, replica_id: str) -> _Connection:
        connection = self._connections.get(replica_id)
        if connection is not None and not connection.closed:
            return connection
        opening = self._opening.get(replica_id)
        if opening is None or opening.done():
            opening = self._opening[replica_id] = detached_task(self._open(replica_id))
        try:
            # Shielded: one request's cancellation must not cut the connection the others wait for.
            return await asyncio.shield(opening)
        finally:
            if opening.done() and self._opening.get(replica_id) is opening:
                del self._opening[replica_id]

    async def _open(self, replica_id: str) -> _Connection:
        try:
            address = await self._resolve(replica_id)
            if address.replica_id != replica_id:
                raise ReplicaConnectionLost(f"asked for {replica_id}'s address, {address.replica_id} answered")
            reader, writer = await asyncio.open_connection(address.host, address.port)
        except ReplicaConnectionLost:
            raise
        except (OSError, asyncio.TimeoutError) as error:
            raise ReplicaConnectionLost(f"could not connect to LLM replica {replica_id}: {error}") from error
        writer.write(_hello(address.token, self._ingress_id))
        connection = _Connection(reader, writer)
        connection.reading = detached_task(self._read_forever(replica_id, connection))
        self._connections[replica_id] = connection
        self.connections_opened += 1
        return connection

    async def _read_forever(self, replica_id: str, connection: _Connection) -> None:
        error: BaseException | None = None
        try:
            while True:
                kind, call_id, payload = await read_frame(connection.reader)
                if kind == "parts":
                    unknown = self._deliver(payload)
                    if unknown:
                        connection.writer.write(encode_frame("forget", 0, unknown))
                    continue
                answer = connection.calls.get(call_id)
                if answer is None or answer.done():
                    continue
                if kind == "summary":
                    answer.set_result(payload)
                else:
                    answer.set_exception(payload)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, pickle.UnpicklingError) as broke:
            error = broke
        finally:
            connection.closed = True
            if self._connections.get(replica_id) is connection:
                del self._connections[replica_id]
            if connection.calls:
                self.connections_lost += 1
                logger.warning("connection to LLM replica %s lost with %d runs on it: %s", replica_id,
                               len(connection.calls), type(error).__name__ if error else "closed")
            for answer in connection.calls.values():
                if not answer.done():
                    answer.set_exception(ReplicaConnectionLost(f"the connection to LLM replica {replica_id} broke"))
            connection.writer.close()

    def stats(self) -> dict[str, int]:
        return {"connections": sum(not c.closed for c in self._connections.values()),
                "connections_opened": self.connections_opened, "connections_lost": self.connections_lost}

    async def close(self) -> None:
        for connection in list(self._connections.values()):
            connection.writer.close()
            if connection.reading is not None:
                connection.reading.cancel()
