"""A replica's subscription to its own engine's KV cache events (vLLM's ZMQ publisher).

vLLM's engine core publishes each step's blocks stored and removed (`kv_events_config`). The replica
binds nothing itself: the engine binds a port on this host and the replica's thread subscribes there,
converts the events to the router's own (`serve_app.policy.prefix_cache_index`, no vLLM types cross Ray)
and numbers them in a `KvEventLog` that ingress replicas page through with a Ray call. So no ingress
replica needs a socket to every engine across the cluster, and one that starts late still catches up.
"""
from __future__ import annotations

import socket
import threading
from typing import Any

from serve_app.kv_event_log import KvEventLog, KvEventPage
from serve_app.policy.prefix_cache_index import AllCleared, BlocksRemoved, BlocksStored, CacheEvent
from serve_app.telemetry.log_names import service_logger

logger = service_logger("kv_events")
TOPIC = "llmserve-kv"
POLL_MS = 200
DEVICE_MEDIA = (None, "GPU", "gpu", "CPU", "cpu")  # where the engine's own cache lives; not an offload tier


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _in_device_cache(event: Any) -> bool:
    # An offload tier's blocks are not what the engine computes from; LoRA blocks match only requests of
    # that adapter, which the router's keys (token ids alone) cannot tell apart.
    return getattr(event, "medium", None) in DEVICE_MEDIA and getattr(event, "lora_id", None) is None


def plain_events(batch: Any) -> list[CacheEvent]:
    """vLLM's `KVEventBatch` as the router's events."""
    from vllm.distributed.kv_events import AllBlocksCleared, BlockRemoved, BlockStored

    events: list[CacheEvent] = []
    for event in batch.events:
        if isinstance(event, BlockStored) and _in_device_cache(event):
            events.append(BlocksStored(list(event.block_hashes), event.parent_block_hash, list(event.token_ids),
                                       event.block_size))
        elif isinstance(event, BlockRemoved) and _in_device_cache(event):
            events.append(BlocksRemoved(list(event.block_hashes)))
        elif isinstance(event, AllBlocksCleared):
            events.append(AllCleared())
    return events


class EngineKvEvents:
    """The engine's publisher config (pass `engine_config()` as `kv_events_config`), and the thread that
    keeps its events for `page`."""

    def __init__(self, log: KvEventLog | None = None):
        self._port = free_port()
        self._log = log or KvEventLog()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.received_batches = 0

    def engine_config(self) -> Any:
        from vllm.config import KVEventsConfig

        return KVEventsConfig(enable_kv_cache_events=True, publisher="zmq", endpoint=f"tcp://*:{self._port}",
                              topic=TOPIC)

    def start(self) -> None:
        """Subscribe (before the engine starts publishing: a PUB socket drops what no one hears)."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._receive, args=(ready,), name="kv-events", daemon=True)
        self._thread.start()
        ready.wait(5)

    def engine_ready(self, block_size: int, capacity_blocks: int | None) -> None:
        with self._lock:
            self._log.block_size, self._log.capacity_blocks = block_size, capacity_blocks

    def stop(self) -> None:
        self._stop.set()

    def page(self, since_seq: int) -> KvEventPage:
        with self._lock:
            return self._log.since(since_seq)

    def _receive(self, ready: threading.Event) -> None:
        import msgspec
        import zmq
        from vllm.distributed.kv_events import KVEventBatch

        decoder = msgspec.msgpack.Decoder(type=KVEventBatch)
        context = zmq.Context.instance()
        subscriber = context.socket(zmq.SUB)
        subscriber.connect(f"tcp://127.0.0.1:{self._port}")
        subscriber.setsockopt_string(zmq.SUBSCRIBE, TOPIC)
        ready.set()
        try:
            while not self._stop.is_set():
                if not subscriber.poll(POLL_MS):
                    continue
                _topic, _seq, payload = subscriber.recv_multipart()
                try:
                    events = plain_events(decoder.decode(payload))
                except (msgspec.DecodeError, msgspec.ValidationError) as error:
                    logger.warning("undecodable KV event batch skipped: %s", error)
                    continue
                with self._lock:
                    self._log.append(events)
                self.received_batches += 1
        finally:
            subscriber.close(linger=0)
