"""Outbox/Inbox: batching across requests, ordering, completion waits, undeliverable batches."""
from __future__ import annotations

import asyncio

from serve_app.delivery import Inbox, Outbox
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
