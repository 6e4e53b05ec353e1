"""Outbox/Inbox: batching across requests, ordering, completion waits, undeliverable batches."""
from __future__ import annotations

import asyncio

import pytest

from serve_app.delivery import Inbox, Outbox, PartQueue
from serve_app.generation import ResponsePart


def chunk(text: str, finish: str | None = None) -> ResponsePart:
    return ResponsePart(text.encode(), done=finish is not None, generated_tokens=len(text))


class SlowLink:
    """Records batches; each send takes until the test releases it, like a busy Ray call."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list]] = []
        self.release = asyncio.Event()

    async def send(self, destination: str, batch: list) -> None:
        self.batches.append((destination, batch))
        await self.release.wait()


def test_chunks_queued_during_a_send_go_out_together_in_order():
    async def scenario():
        link = SlowLink()
        outbox = Outbox(link.send)
        outbox.put("ingress-a", "r1", chunk("a"))
        await asyncio.sleep(0)  # first send starts with one chunk and blocks
        outbox.put("ingress-a", "r2", chunk("b"))
        outbox.put("ingress-a", "r1", chunk("c"))
        last = outbox.put("ingress-a", "r2", chunk("d", "length"))
        link.release.set()
        await asyncio.wait_for(outbox.wait_sent("ingress-a", last), 1)
        return link.batches, outbox

    batches, outbox = asyncio.run(scenario())
    assert [[(rid, c.body.decode()) for rid, c in batch] for _, batch in batches] == [
        [("r1", "a")], [("r2", "b"), ("r1", "c"), ("r2", "d")]]
    assert (outbox.batches_sent, outbox.chunks_sent) == (2, 4)


def test_destinations_are_sent_separately():
    async def scenario():
        link = SlowLink()
        link.release.set()
        outbox = Outbox(link.send)
        a = outbox.put("ingress-a", "r1", chunk("x"))
        b = outbox.put("ingress-b", "r2", chunk("y"))
        await asyncio.wait_for(asyncio.gather(outbox.wait_sent("ingress-a", a), outbox.wait_sent("ingress-b", b)), 1)
        return sorted((dest, [rid for rid, _ in batch]) for dest, batch in link.batches)

    assert asyncio.run(scenario()) == [("ingress-a", ["r1"]), ("ingress-b", ["r2"])]


def test_wait_sent_blocks_until_the_batch_is_handed_over():
    async def scenario():
        link = SlowLink()
        outbox = Outbox(link.send)
        seq = outbox.put("ingress-a", "r1", chunk("x"))
        waiter = asyncio.ensure_future(outbox.wait_sent("ingress-a", seq))
        await asyncio.sleep(0.01)
        blocked = not waiter.done()
        link.release.set()
        await asyncio.wait_for(waiter, 1)
        return blocked

    assert asyncio.run(scenario()) is True


def test_a_failing_destination_drops_its_batch_and_releases_waiters():
    async def scenario():
        async def broken(destination: str, batch: list) -> None:
            raise ConnectionError("ingress replica gone")

        outbox = Outbox(broken)
        seq = outbox.put("gone", "r1", chunk("x"))
        await asyncio.wait_for(outbox.wait_sent("gone", seq), 1)
        return outbox.batches_failed, outbox.batches_sent

    assert asyncio.run(scenario()) == (1, 0)


def test_a_hung_destination_times_out():
    async def scenario():
        async def hang(destination: str, batch: list) -> None:
            await asyncio.Event().wait()

        outbox = Outbox(hang, send_timeout_s=0.05)
        seq = outbox.put("hung", "r1", chunk("x"))
        await asyncio.wait_for(outbox.wait_sent("hung", seq), 1)
        return outbox.batches_failed

    assert asyncio.run(scenario()) == 1


def test_inbox_routes_by_request_and_counts_orphans():
    async def scenario():
        inbox = Inbox()
        q1, q2 = inbox.open("r1"), inbox.open("r2")
        inbox.deliver([("r1", chunk("a")), ("r2", chunk("b")), ("gone", chunk("c")), ("r1", chunk("d"))])
        inbox.close("r2")
        inbox.deliver([("r2", chunk("late"))])
        return [q1.get_nowait().body.decode(), q1.get_nowait().body.decode()], q2.qsize(), inbox.orphan_chunks, len(inbox)

    assert asyncio.run(scenario()) == (["a", "d"], 1, 2, 1)


def test_sender_survives_a_call_cancelled_under_it():
    async def scenario():
        calls = []

        async def flaky(destination: str, batch: list) -> None:
            calls.append([rid for rid, _ in batch])
            if len(calls) == 1:
                raise asyncio.CancelledError()  # as Ray Serve does when the call's parent request ends

        outbox = Outbox(flaky)
        first = outbox.put("ingress-a", "r1", chunk("x"))
        await asyncio.wait_for(outbox.wait_sent("ingress-a", first), 1)
        second = outbox.put("ingress-a", "r2", chunk("y", "stop"))
        await asyncio.wait_for(outbox.wait_sent("ingress-a", second), 1)
        return calls, outbox.batches_failed, outbox.batches_sent

    assert asyncio.run(scenario()) == ([["r1"], ["r2"]], 1, 1)


def test_merged_parts_keep_every_byte_the_first_status_and_the_last_done():
    from serve_app.generation import ResponsePart, merge_parts

    merged = merge_parts(ResponsePart(b"data: 1\n\n", status=200, headers=[("content-type", "text/event-stream")],
                                      generated_tokens=1),
                         ResponsePart(b"data: 2\n\n", generated_tokens=2),
                         ResponsePart(b"data: [DONE]\n\n", done=True, generated_tokens=2))
    assert (merged.body, merged.status, merged.headers, merged.done, merged.generated_tokens) == (
        b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n", 200, [("content-type", "text/event-stream")], True, 2)
    failed = merge_parts(ResponsePart(b"a"), ResponsePart(b"", done=True, error="engine failed"))
    assert (failed.error, failed.done) == ("engine failed", True)
    single = ResponsePart(b"x")
    assert merge_parts(single) is single


def test_requests_the_ingress_no_longer_holds_are_reported_abandoned():
    async def scenario():
        inbox = Inbox()
        inbox.open("kept")
        abandoned: list[str] = []

        async def send(destination: str, batch: list) -> list[str]:
            return inbox.deliver(batch)

        outbox = Outbox(send, on_abandoned=abandoned.extend)
        outbox.put("ingress-a", "kept", chunk("a"))
        outbox.put("ingress-a", "gone", chunk("b"))
        last = outbox.put("ingress-a", "gone", chunk("c"))
        await asyncio.wait_for(outbox.wait_sent("ingress-a", last), 1)
        return abandoned

    assert asyncio.run(scenario()) == ["gone"]


def test_a_failed_send_abandons_every_request_in_the_batch_once():
    async def scenario():
        abandoned: list[str] = []

        async def send(destination: str, batch: list) -> None:
            raise RuntimeError("ingress replica gone")

        outbox = Outbox(send, on_abandoned=abandoned.extend)
        outbox.put("ingress-a", "r1", chunk("a"))
        outbox.put("ingress-a", "r2", chunk("b"))
        last = outbox.put("ingress-a", "r1", chunk("c"))
        await asyncio.wait_for(outbox.wait_sent("ingress-a", last), 1)
        return abandoned, outbox.batches_failed

    abandoned, failed = asyncio.run(scenario())
    assert failed >= 1 and sorted(abandoned) == ["r1", "r2"]


def test_recent_calls_report_how_long_deliveries_took_and_how_many_chunks_they_carried():
    now = [0.0]

    async def scenario():
        async def send(destination: str, batch: list) -> None:
            now[0] += 0.01 * len(batch)  # a call's time grows with its batch, as a Ray call's does

        outbox = Outbox(send, clock=lambda: now[0])
        assert outbox.recent_calls()["n"] == 0 and outbox.recent_calls()["p50_s"] is None
        outbox.put("ingress-a", "r1", chunk("a"))
        await asyncio.sleep(0)
        for text in "bcd":
            last = outbox.put("ingress-a", "r1", chunk(text))
        await asyncio.wait_for(outbox.wait_sent("ingress-a", last), 1)
        return outbox.recent_calls()

    calls = asyncio.run(scenario())
    assert calls["n"] == 2 and calls["chunks_max"] == 3 and calls["chunks_p50"] == 2.0
    assert calls["max_s"] == 0.03 and abs(calls["p50_s"] - 0.02) < 1e-9


def first(text: str) -> ResponsePart:
    """A response's first part: it carries the status (a stream's first token with it)."""
    return ResponsePart(text.encode(), status=200, generated_tokens=1)


class GatedLink:
    """Each call blocks until the test releases it by its index (0: the first call made)."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[str, str]]] = []
        self.gates: list[asyncio.Event] = []

    async def send(self, destination: str, batch: list) -> None:
        self.calls.append([(rid, part.body.decode()) for rid, part in batch])
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()

    async def release(self, index: int) -> None:
        while len(self.gates) <= index:
            await asyncio.sleep(0)
        self.gates[index].set()
        await asyncio.sleep(0.01)


def test_a_first_part_does_not_wait_behind_the_batch_call_in_flight_and_its_request_stays_in_order():
    async def scenario():
        link = GatedLink()
        outbox = Outbox(link.send)
        outbox.put("ingress-a", "old", first("o1"))
        await asyncio.sleep(0)  # call 0: the old stream's batch, in flight until released
        outbox.put("ingress-a", "old", chunk("o2"))
        new_first = outbox.put("ingress-a", "new", first("n1"))
        outbox.put("ingress-a", "new", chunk("n2"))  # must not overtake n1
        await asyncio.sleep(0.01)
        calls_while_batch_in_flight = [list(c) for c in link.calls]
        await link.release(1)  # the first part's own call ends
        waiter = asyncio.ensure_future(outbox.wait_sent("ingress-a", new_first))
        await asyncio.sleep(0.01)
        blocked_behind_old_batch = not waiter.done()  # o2, queued before n1, is not handed over yet
        await link.release(0)
        await link.release(2)
        await asyncio.wait_for(waiter, 1)
        return calls_while_batch_in_flight, link.calls, outbox, blocked_behind_old_batch

    in_flight, calls, outbox, blocked = asyncio.run(scenario())
    assert in_flight == [[("old", "o1")], [("new", "n1")]]  # n1 went out beside the batch call
    assert calls[2] == [("old", "o2"), ("new", "n2")]  # n2 only after n1 was handed over
    assert outbox.first_part_calls == 1 and outbox.recent_calls()["first_part_calls"] == 1
    assert blocked  # wait_sent still means every part queued up to it


def test_a_failed_first_parts_call_is_not_counted_as_one_delivered():
    class FirstPartsFail(GatedLink):
        async def send(self, destination: str, batch: list) -> None:
            if len(self.calls) == 1:  # the first parts' own call, beside the gated batch
                self.calls.append([(rid, part.body.decode()) for rid, part in batch])
                raise ConnectionError("ingress replica gone")
            await super().send(destination, batch)

    async def scenario():
        link = FirstPartsFail()
        abandoned: list[str] = []
        outbox = Outbox(link.send, on_abandoned=abandoned.extend)
        outbox.put("ingress-a", "old", first("o1"))
        await asyncio.sleep(0)
        outbox.put("ingress-a", "new", first("n1"))
        await asyncio.sleep(0.01)
        await link.release(0)
        return outbox.first_part_calls, outbox.batches_failed, abandoned

    assert asyncio.run(scenario()) == (0, 1, ["new"])


def test_without_the_first_parts_call_a_first_part_rides_in_the_next_batch():
    async def scenario():
        link = GatedLink()
        outbox = Outbox(link.send, first_parts_own_call=False)
        outbox.put("ingress-a", "old", first("o1"))
        await asyncio.sleep(0)
        last = outbox.put("ingress-a", "new", first("n1"))
        await asyncio.sleep(0.01)
        during = len(link.calls)
        await link.release(0)
        await link.release(1)
        await asyncio.wait_for(outbox.wait_sent("ingress-a", last), 1)
        return during, link.calls, outbox.first_part_calls

    assert asyncio.run(scenario()) == (1, [[("old", "o1")], [("new", "n1")]], 0)


def test_a_first_part_with_no_batch_in_flight_goes_in_the_batch_as_before():
    async def scenario():
        link = SlowLink()
        link.release.set()
        outbox = Outbox(link.send)
        last = outbox.put("ingress-a", "r1", first("a"))
        await asyncio.wait_for(outbox.wait_sent("ingress-a", last), 1)
        return outbox.first_part_calls, len(link.batches)

    assert asyncio.run(scenario()) == (0, 1)


def test_the_inbox_stamps_a_first_parts_arrival_and_merged_parts_keep_the_first_parts_stamps():
    from serve_app.generation import FirstPartStamps, merge_parts

    async def scenario():
        inbox = Inbox(wall_clock=lambda: 50.0)
        queue = inbox.open("r1")
        stamped = ResponsePart(b"a", status=200, stamps=FirstPartStamps(49.0, 49.1, 49.2, 49.6, 49.7))
        inbox.deliver([("r1", stamped), ("r1", chunk("b"))])
        return queue.get_nowait(), queue.get_nowait()

    first_part, second = asyncio.run(scenario())
    assert first_part.stamps.delivered == 50.0 and second.stamps is None
    stages = merge_parts(first_part, second).stamps.stages(written=50.05)
    assert stages == pytest.approx({"before_dispatch": 0.1, "hop_to_replica": 0.1, "replica_to_first_token": 0.4,
                                    "first_token_to_delivery": 0.1, "delivery": 0.3, "ingress_write": 0.05,
                                    "total": 1.05})


def test_a_part_queue_wakes_its_reader_one_loop_turn_after_a_part_comes():
    async def main():
        queue, dispatched, got = PartQueue(), asyncio.get_running_loop().create_future(), []

        async def read():
            got.append(await queue.next_or_none_after(dispatched))

        reader = asyncio.create_task(read())
        await asyncio.sleep(0)  # the reader waits
        queue.put_nowait(ResponsePart(b"a"))
        await asyncio.sleep(0)  # one turn: the reader has it
        assert [part.body for part in got] == [b"a"]
        await reader
    asyncio.run(main())


def test_a_part_queue_gives_none_once_the_other_ends_with_nothing_queued_and_parts_first():
    async def main():
        queue, dispatched = PartQueue(), asyncio.get_running_loop().create_future()
        queue.put_nowait(ResponsePart(b"a"))
        assert (await queue.next_or_none_after(dispatched)).body == b"a"
        asyncio.get_running_loop().call_soon(dispatched.set_result, "summary")
        assert await queue.next_or_none_after(dispatched) is None
        queue.put_nowait(ResponsePart(b"late"))  # a part after the call ended still comes out
        assert (await queue.next_or_none_after(dispatched)).body == b"late"
    asyncio.run(main())


def test_a_cancelled_wait_on_a_part_queue_leaves_nothing_behind():
    async def main():
        queue, dispatched = PartQueue(), asyncio.get_running_loop().create_future()
        reader = asyncio.create_task(queue.next_or_none_after(dispatched))
        await asyncio.sleep(0)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        dispatched.set_result(None)  # no callback of the cancelled wait left on it
        queue.put_nowait(ResponsePart(b"a"))
        assert queue._waiter is None and (await queue.next_or_none_after(dispatched)).body == b"a"
    asyncio.run(main())
