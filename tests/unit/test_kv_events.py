"""The replica's subscription to its engine's KV events, fed by vLLM's own ZMQ publisher."""
import time

from vllm.distributed.kv_events import (AllBlocksCleared, BlockRemoved, BlockStored, EventPublisherFactory,
                                        KVEventBatch)

from serve_app.kv_events import EngineKvEvents, plain_events
from serve_app.policy.prefix_cache_index import AllCleared, BlocksRemoved, BlocksStored


def _stored(hashes, parent, tokens, lora_id=None, medium="GPU"):
    return BlockStored(block_hashes=hashes, parent_block_hash=parent, token_ids=tokens, block_size=2,
                       lora_id=lora_id, medium=medium, lora_name=None)


def test_vllm_events_become_the_routers_own():
    batch = KVEventBatch(ts=0.0, events=[
        _stored([b"h1", b"h2"], None, [1, 2, 3, 4]),
        _stored([b"x"], None, [5, 6], lora_id=3),  # an adapter's block: not matched by token ids alone
        _stored([b"y"], None, [7, 8], medium="CPU_OFFLOAD"),  # an offload tier, not the engine's cache
        BlockRemoved(block_hashes=[b"h2"], medium="GPU"),
        AllBlocksCleared(),
    ])
    assert plain_events(batch) == [BlocksStored([b"h1", b"h2"], None, [1, 2, 3, 4], 2), BlocksRemoved([b"h2"]),
                                   AllCleared()]


def test_events_published_by_the_engine_reach_the_log_in_order():
    events = EngineKvEvents()
    events.start()
    publisher = EventPublisherFactory.create(events.engine_config())
    try:
        events.engine_ready(block_size=2, capacity_blocks=100)
        deadline = time.monotonic() + 10
        # A subscriber misses what is published before its connection is up (ZMQ's slow joiner): publish
        # until the first batch arrives, then the rest.
        while events.page(0).events == [] and time.monotonic() < deadline:
            publisher.publish(KVEventBatch(ts=time.time(), events=[_stored([b"a"], None, [1, 2])]))
            time.sleep(0.05)
        first = events.page(0)
        assert first.events and first.block_size == 2 and first.capacity_blocks == 100
        publisher.publish(KVEventBatch(ts=time.time(), events=[_stored([b"b"], b"a", [3, 4]),
                                                               BlockRemoved(block_hashes=[b"a"], medium="GPU")]))
        while events.page(first.next_seq).events == [] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert events.page(first.next_seq).events[-2:] == [BlocksStored([b"b"], b"a", [3, 4], 2),
                                                          BlocksRemoved([b"a"])]
    finally:
        publisher.shutdown()
        events.stop()
