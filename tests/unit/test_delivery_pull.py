"""Delivery by pull: the replica's mailboxes and the ingress's streams, in-process (real asyncio, fake clock
for the idle and reconnect timers)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from serve_app.delivery import Inbox, Outbox
from serve_app.delivery_pull import Collector, IngressGone, Mailboxes
from serve_app.generation import ResponsePart

WAKE_S = 0.005  # the streams' idle check, real seconds


def part(text: str, first: bool = False, done: bool = False) -> ResponsePart:
    return ResponsePart(text.encode(), status=200 if first else None, done=done)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 5))


async def advance(clock: FakeClock, to: float, step: float = 0.2) -> None:
    """Time passes in steps, with the replica's loop looking between them (not one stall)."""
    while clock.now < to:
        clock.now = min(to, clock.now + step)
        await asyncio.sleep(WAKE_S * 2)


async def confirmed(stream, send: asyncio.Task) -> None:
    """The stream asks for its next batch (Ray Serve does once it has sent one), which completes `send`."""
    following = asyncio.create_task(anext(stream))
    await asyncio.wait_for(send, 1)
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)


def test_a_batch_waits_for_the_stream_and_send_returns_once_it_is_handed_on():
    async def scenario():
        boxes = Mailboxes(lambda ingress: True)
        send = asyncio.create_task(boxes.send("ing", [("r1", part("a", first=True))]))
        await asyncio.sleep(0.02)
        assert not send.done()  # no stream yet: parked
        stream = boxes.stream("ing", wake_every_s=WAKE_S)
        batch = await anext(stream)
        assert [(rid, p.body) for rid, p in batch] == [("r1", b"a")]
        await asyncio.sleep(0)
        assert not send.done()  # yielded, but the stream has not asked for more: not yet handed on
        await confirmed(stream, send)
    run(scenario())


def test_batches_parked_meanwhile_come_out_together_in_the_order_they_were_parked():
    async def scenario():
        boxes = Mailboxes(lambda ingress: True)
        sends = [asyncio.create_task(boxes.send("ing", [(f"r{i}", part(str(i)))])) for i in range(3)]
        await asyncio.sleep(0)
        other = asyncio.create_task(boxes.send("other", [("x", part("x"))]))
        await asyncio.sleep(0)
        stream = boxes.stream("ing", wake_every_s=WAKE_S)
        batch = await anext(stream)
        assert [rid for rid, _ in batch] == ["r0", "r1", "r2"]
        pending = asyncio.create_task(anext(stream))
        await asyncio.wait_for(asyncio.gather(*sends), 1)
        assert not other.done()  # another ingress's batch waits for that ingress's stream
        for task in (pending, other):
            task.cancel()
        await asyncio.gather(pending, other, return_exceptions=True)
    run(scenario())


def test_the_outbox_and_the_inbox_through_a_stream_keep_each_requests_parts_in_order():
    async def scenario():
        boxes = Mailboxes(lambda ingress: True)
        outbox = Outbox(boxes.send)
        inbox = Inbox()
        queues = {rid: inbox.open(rid) for rid in ("r1", "r2")}
        collector = Collector(lambda replica: boxes.stream("ing", wake_every_s=WAKE_S), inbox.deliver,
                              forget=lambda replica, ids: asyncio.sleep(0))
        with collector.running_on("replica-1"):
            last = 0
            for i in range(20):
                for rid in ("r1", "r2"):
                    last = outbox.put("ing", rid, part(f"{rid}-{i}", first=i == 0, done=i == 19))
                if i % 5 == 0:
                    await asyncio.sleep(0)
            await asyncio.wait_for(outbox.wait_sent("ing", last), 1)
            for rid, queue in queues.items():
                bodies = [queue.get_nowait().body.decode() for _ in range(queue.qsize())]
                assert bodies == [f"{rid}-{i}" for i in range(20)]
        assert collector.stats()["batches"] >= 1
        await collector.close()
    run(scenario())


def test_a_stream_ends_when_idle_with_no_request_running_for_its_ingress():
    async def scenario():
        clock = FakeClock()
        running = {"ing": 1}
        boxes = Mailboxes(lambda ingress: running.get(ingress, 0) > 0, idle_close_s=5.0, silence_s=None, clock=clock)
        stream = boxes.stream("ing", wake_every_s=WAKE_S)
        waiting = asyncio.create_task(anext(stream))
        clock.now = 100.0  # long idle, but a request runs: stays open
        await asyncio.sleep(0.05)
        assert not waiting.done()
        running["ing"] = 0
        clock.now = 103.0  # idle 3 s since last seen busy: still open
        await asyncio.sleep(0.05)
        assert not waiting.done()
        clock.now = 106.0
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 1)
        assert boxes.streams_broken == 0
    run(scenario())


def test_a_newer_stream_replaces_the_older_one_and_gets_what_is_parked():
    async def scenario():
        boxes = Mailboxes(lambda ingress: True)
        old = boxes.stream("ing", wake_every_s=WAKE_S)
        old_next = asyncio.create_task(anext(old))
        await asyncio.sleep(0.01)
        new = boxes.stream("ing", wake_every_s=WAKE_S)
        new_next = asyncio.create_task(anext(new))
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(old_next, 1)
        send = asyncio.create_task(boxes.send("ing", [("r1", part("a"))]))
        batch = await asyncio.wait_for(new_next, 1)
        assert [rid for rid, _ in batch] == ["r1"]
        await confirmed(new, send)
    run(scenario())


def test_a_broken_stream_fails_what_it_carried_and_after_the_grace_what_waits_for_it():
    async def scenario():
        clock = FakeClock()
        boxes = Mailboxes(lambda ingress: True, reconnect_grace_s=0.02, silence_s=None, clock=clock)
        stream = boxes.stream("ing", wake_every_s=WAKE_S)
        carried = asyncio.create_task(boxes.send("ing", [("r1", part("a"))]))
        await anext(stream)
        await stream.aclose()  # the ingress replica died with the batch on its way
        with pytest.raises(IngressGone):
            await asyncio.wait_for(carried, 1)
        assert boxes.streams_broken == 1
        waiting = asyncio.create_task(boxes.send("ing", [("r2", part("b"))]))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # within the grace (fake clock): the ingress may open another stream
        clock.now = 1.0
        with pytest.raises(IngressGone):
            await asyncio.wait_for(waiting, 1)
        with pytest.raises(IngressGone):  # and new ones at once
            await asyncio.wait_for(boxes.send("ing", [("r3", part("c"))]), 0.01)
        # An ingress that comes back (a new stream) gets deliveries again.
        reopened = boxes.stream("ing", wake_every_s=WAKE_S)
        send = asyncio.create_task(boxes.send("ing", [("r4", part("d"))]))
        assert [rid for rid, _ in await anext(reopened)] == ["r4"]
        await confirmed(reopened, send)
    run(scenario())


def test_a_send_that_times_out_takes_its_batch_back():
    async def scenario():
        boxes = Mailboxes(lambda ingress: True)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(boxes.send("ing", [("late", part("a"))]), 0.02)
        send = asyncio.create_task(boxes.send("ing", [("r1", part("b"))]))
        stream = boxes.stream("ing", wake_every_s=WAKE_S)
        assert [rid for rid, _ in await anext(stream)] == ["r1"]
        await confirmed(stream, send)
    run(scenario())


def test_an_outbox_abandons_the_requests_of_an_ingress_whose_stream_broke():
    async def scenario():
        clock = FakeClock()
        boxes = Mailboxes(lambda ingress: True, reconnect_grace_s=0.01, silence_s=None, clock=clock)
        abandoned: list[str] = []
        outbox = Outbox(boxes.send, on_abandoned=abandoned.extend)
        stream = boxes.stream("ing", wake_every_s=WAKE_S)
        first = outbox.put("ing", "r1", part("a", first=True))
        await anext(stream)
        await stream.aclose()
        await asyncio.wait_for(outbox.wait_sent("ing", first), 1)
        clock.now = 1.0
        last = outbox.put("ing", "r2", part("b", first=True))
        await asyncio.wait_for(outbox.wait_sent("ing", last), 2)
        assert abandoned == ["r1", "r2"]
        assert outbox.batches_failed == 2
    run(scenario())


class ScriptedStreams:
    """open_stream for a Collector: each opening plays the next script (batches, then an end or an error)."""

    def __init__(self, scripts: list[tuple[list, BaseException | None]]) -> None:
        self.scripts = scripts
        self.opened: list[str] = []
        self.release = asyncio.Event()

    def __call__(self, replica_id: str) -> AsyncIterator:
        self.opened.append(replica_id)
        batches, error = self.scripts.pop(0) if self.scripts else ([], None)

        async def play():
            for batch in batches:
                yield batch
            await asyncio.sleep(0.001)  # a Ray stream's end comes over the network
            if error is not None:
                raise error
            await self.release.wait()
        return play()


def test_the_collector_reopens_a_stream_that_ends_while_requests_run_there_and_forgets_unknown_ids():
    async def scenario():
        inbox = Inbox()
        queue = inbox.open("r1")
        forgotten: list[tuple[str, list[str]]] = []

        async def forget(replica_id: str, ids: list[str]) -> None:
            forgotten.append((replica_id, ids))

        streams = ScriptedStreams([([[("r1", part("a", first=True))]], None),  # ends (idle close)
                                   ([], RuntimeError("replica restarting")),
                                   ([[("r1", part("b")), ("gone", part("x"))]], None)])
        streams.release.set()  # each script ends after its batches unless it raised
        collector = Collector(streams, inbox.deliver, forget, retry_s=0.01, heartbeat_s=60)
        with collector.running_on("replica-1"):
            for _ in range(200):
                if queue.qsize() == 2 and forgotten:
                    break
                await asyncio.sleep(0.005)
        assert [queue.get_nowait().body for _ in range(2)] == [b"a", b"b"]
        assert forgotten == [("replica-1", ["gone"])]
        assert collector.stream_failures == 1
        await asyncio.sleep(0.05)
        opened = len(streams.opened)
        await asyncio.sleep(0.05)
        assert len(streams.opened) == opened  # nothing runs there any more: no stream reopened
        assert collector.stats()["streams_open"] == 0
        await collector.close()
    run(scenario())


def test_the_collector_keeps_one_stream_per_replica_however_many_requests_run_there():
    async def scenario():
        streams = ScriptedStreams([])
        collector = Collector(streams, Inbox().deliver, lambda replica, ids: asyncio.sleep(0), heartbeat_s=60)
        with collector.running_on("a"), collector.running_on("a"), collector.running_on("b"):
            await asyncio.sleep(0.01)
            assert sorted(streams.opened) == ["a", "b"]
            assert collector.stats()["streams_open"] == 2
        await collector.close()
    run(scenario())


def test_an_ingress_that_falls_silent_is_gone_its_stream_ends_and_its_parts_fail_at_once():
    """Ray Serve does not end a stream whose caller died; the heartbeats' silence does."""
    async def scenario():
        clock = FakeClock()
        boxes = Mailboxes(lambda ingress: True, silence_s=2.5, clock=clock)
        stream = boxes.stream("ing", wake_every_s=WAKE_S)
        waiting = asyncio.create_task(anext(stream))
        await asyncio.sleep(0.01)  # opened at 0 s
        await advance(clock, 2.0)
        boxes.heard_from("ing")  # a heartbeat at 2 s: alive until 4.5 s
        await advance(clock, 4.0)
        assert not waiting.done()
        parked = asyncio.create_task(boxes.send("ing", [("r1", part("a"))]))
        batch = await asyncio.wait_for(waiting, 1)  # still alive: it is handed on
        following = asyncio.create_task(anext(stream))
        await advance(clock, 5.0)  # silent for 3 s: gone
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(following, 1)
        assert [rid for rid, _ in batch] == ["r1"] and parked.done()
        assert boxes.streams_broken == 1
        with pytest.raises(IngressGone):  # no grace after silence: the ingress is dead
            await asyncio.wait_for(boxes.send("ing", [("r2", part("b"))]), 1)
    run(scenario())


def test_the_collector_sends_heartbeats_to_the_replicas_it_streams_from():
    async def scenario():
        heard: list[tuple[str, list[str]]] = []

        async def forget(replica_id: str, ids: list[str]) -> None:
            heard.append((replica_id, ids))

        collector = Collector(ScriptedStreams([]), Inbox().deliver, forget, heartbeat_s=0.01)
        with collector.running_on("a"):
            await asyncio.sleep(0.1)
        assert ("a", []) in heard and len(heard) >= 3
        await collector.close()
    run(scenario())


def test_a_stall_of_the_replicas_own_loop_is_not_taken_for_the_ingresss_silence():
    """After the replica itself did not look for a while, heartbeats may still wait to be read."""
    async def scenario():
        clock = FakeClock()
        boxes = Mailboxes(lambda ingress: True, silence_s=3.0, clock=clock)
        stream = boxes.stream("ing", wake_every_s=WAKE_S)
        waiting = asyncio.create_task(anext(stream))
        await asyncio.sleep(0.01)
        clock.now = 10.0  # one jump: this process looked at nothing for 10 s
        await asyncio.sleep(0.05)
        assert not waiting.done() and boxes.streams_broken == 0
        await advance(clock, 16.0)  # then looking on time, with no heartbeat: gone after the silence
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 1)
        assert boxes.streams_broken == 1
    run(scenario())



def test_the_mailbox_of_an_ingress_gone_for_a_minute_is_dropped_but_not_one_with_requests_here():
    """Ingress replicas come and go while an LLM replica lives on: their mailboxes must not pile up."""
    async def heartbeats_until(clock: FakeClock, boxes: Mailboxes, to: float) -> None:
        while clock.now < to:
            clock.now = min(to, clock.now + 0.45)  # under two checks apart: no stall of the replica's loop
            boxes.heard_from("alive")
            await asyncio.sleep(WAKE_S * 2)

    async def scenario():
        clock = FakeClock()
        running_for = {"busy", "alive"}
        boxes = Mailboxes(lambda ingress: ingress in running_for, silence_s=3.0, clock=clock)
        boxes.heard_from("gone")
        boxes.heard_from("busy")
        stream = boxes.stream("alive", wake_every_s=WAKE_S)  # its idle loop looks for gone ingresses
        waiting = asyncio.create_task(anext(stream))
        await heartbeats_until(clock, boxes, 55.0)
        assert boxes.destinations == 3
        await heartbeats_until(clock, boxes, 95.0)
        assert boxes.destinations == 2  # "gone" dropped; "busy" still has a request here
        running_for.discard("busy")
        await heartbeats_until(clock, boxes, 190.0)
        assert boxes.destinations == 1 and not waiting.done()  # "alive" streams on
        waiting.cancel()
    asyncio.run(asyncio.wait_for(scenario(), 30))
