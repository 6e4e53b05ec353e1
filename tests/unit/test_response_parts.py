"""The ingress's response state machine (serve_app.http.response_parts) with a fake router: parts in
order, a retry when a replica is lost before the first token, refusals as OpenAI errors, a client
that leaves cancels the dispatch."""
import asyncio
import dataclasses

import pytest

from serve_app.delivery import Inbox
from serve_app.deployments.errors import ReplicaFailed
from serve_app.generation import GenerationRequest, ResponsePart, RunSummary
from serve_app.http.response_parts import MAX_DISPATCH_ATTEMPTS, ResponseParts, event_stream
from serve_app.openai_api import ApiError
from serve_app.policy.router_core import Refusal
from serve_app.telemetry.tracing import RequestSpan


class Door:
    def __init__(self):
        self.admitted, self.refused = [], []

    def router_admitted(self, class_name):
        self.admitted.append(class_name)

    def router_refused(self, class_name, message, retry_after_s):
        self.refused.append((class_name, retry_after_s))


def request(request_id="r1"):
    return GenerationRequest(request_id=request_id, path="/v1/completions", body=b"{}", headers=[],
                             priority_class="interactive", priority_rank=0, estimated_prompt_tokens=4,
                             max_new_tokens=4, caller="anonymous")


def make(submit, coalesce_s=0.0):
    inbox, door, firsts = Inbox(), Door(), []
    def first_token(span, ago):  # marks the span once, as the ingress's telemetry does
        if span.first_token(ago) is not None:
            firsts.append(ago)

    parts = ResponseParts(inbox, submit, door, {"interactive": coalesce_s}, first_token)
    return inbox, door, firsts, parts


async def collect(parts, gen, streamed=True):
    return [part async for part in parts.parts(gen, RequestSpan("test"), streamed)]


def test_parts_arrive_in_order_and_the_door_hears_the_admission():
    async def main():
        inbox = None

        async def submit(gen):
            inbox.deliver([(gen.request_id, ResponsePart(b"a", generated_tokens=1))])
            await asyncio.sleep(0)
            inbox.deliver([(gen.request_id, ResponsePart(b"b", done=True, generated_tokens=2))])
            return RunSummary(replica_id="x", finish_reason="stop")

        inbox, door, firsts, parts = make(submit)
        got = await collect(parts, request())
        assert b"".join(p.body for p in got) == b"ab" and got[-1].done
        assert door.admitted == ["interactive"] and firsts == [0.0] and len(inbox) == 0
    asyncio.run(main())


def test_a_replica_lost_before_the_first_token_is_retried_under_a_new_id():
    async def main():
        inbox, tried = None, []

        async def submit(gen):
            tried.append(gen.request_id)
            if len(tried) < MAX_DISPATCH_ATTEMPTS:
                raise ReplicaFailed("gone")
            inbox.deliver([(gen.request_id, ResponsePart(b"ok", done=True, generated_tokens=1))])
            return RunSummary(replica_id="x", finish_reason="stop")

        inbox, _, _, parts = make(submit)
        got = await collect(parts, request())
        assert [p.body for p in got] == [b"ok"]
        assert tried == ["r1", "r1.2", "r1.3"]
    asyncio.run(main())


def test_a_replica_lost_after_the_first_token_ends_with_an_error_part():
    async def main():
        inbox = None

        async def submit(gen):
            inbox.deliver([(gen.request_id, ResponsePart(b"a", generated_tokens=1))])
            await asyncio.sleep(0.01)
            raise ReplicaFailed("gone")

        inbox, _, _, parts = make(submit)
        got = await collect(parts, request())
        assert got[0].body == b"a" and got[-1].done and "replica" in got[-1].error
    asyncio.run(main())


def test_an_overload_refusal_is_a_429_and_closes_the_door_for_the_class():
    async def main():
        async def submit(gen):
            return Refusal(429, "overloaded", "busy", retry_after_s=3)

        _, door, _, parts = make(submit)
        with pytest.raises(ApiError) as raised:
            await collect(parts, request())
        assert raised.value.status == 429 and raised.value.headers == {"Retry-After": "3"}
        assert door.refused == [("interactive", 3)]
    asyncio.run(main())


def test_a_client_that_leaves_cancels_the_dispatch():
    async def main():
        inbox, cancelled = None, asyncio.Event()

        async def submit(gen):
            inbox.deliver([(gen.request_id, ResponsePart(b"a", generated_tokens=1))])
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        inbox, _, _, parts = make(submit)
        stream = parts.parts(request(), RequestSpan("test"), True)
        assert (await stream.__anext__()).body == b"a"
        await stream.aclose()
        await asyncio.wait_for(cancelled.wait(), 1)
        assert len(inbox) == 0
    asyncio.run(main())


def test_events_that_pile_up_go_out_as_one_write():
    async def main():
        inbox = None

        async def submit(gen):
            inbox.deliver([(gen.request_id, ResponsePart(b"1", generated_tokens=1))])
            await asyncio.sleep(0.01)
            inbox.deliver([(gen.request_id, ResponsePart(b"2", generated_tokens=2))])
            await asyncio.sleep(0.005)  # within the 200 ms the stream waits after event 2
            inbox.deliver([(gen.request_id, ResponsePart(b"3", generated_tokens=3))])
            await asyncio.sleep(0.4)
            inbox.deliver([(gen.request_id, ResponsePart(b"4", done=True, generated_tokens=4))])
            return RunSummary(replica_id="x", finish_reason="stop")

        inbox, _, _, parts = make(submit, coalesce_s=0.2)
        got = await collect(parts, request())
        assert [p.body for p in got] == [b"1", b"23", b"4"]
    asyncio.run(main())


def test_event_stream_ends_a_failed_stream_with_an_error_event_and_reports_the_end():
    async def main():
        async def rest():
            yield ResponsePart(b"data: 2\n\n", generated_tokens=2)
            yield ResponsePart(b"", done=True, error="the model replica failed")

        ended = []
        span = RequestSpan("test")
        body = [chunk async for chunk in event_stream("r1", ResponsePart(b"data: 1\n\n", generated_tokens=1), rest(),
                                                      span, lambda status, tokens: ended.append((status, tokens)))]
        assert body[:2] == [b"data: 1\n\n", b"data: 2\n\n"]
        assert b'"code": "stream_failed"' in body[2] and body[2].endswith(b"data: [DONE]\n\n")
        assert ended == [("stream_error", 2)]
        # Anthropic's Messages API ends a failed stream with its own `error` event, and no [DONE].
        anthropic = [chunk async for chunk in event_stream("r2", ResponsePart(b"event: x\n\n", generated_tokens=1),
                                                           rest(), RequestSpan("test"), lambda *_: None, "/v1/messages")]
        assert anthropic[2].startswith(b"event: error\ndata: {\"type\": \"error\"")
        assert b"[DONE]" not in anthropic[2]
    asyncio.run(main())


def test_a_first_parts_stamps_are_handed_on_once_as_it_is_written():
    from serve_app.generation import FirstPartStamps

    async def main():
        inbox, door, seen = Inbox(), Door(), []

        async def submit(gen):
            stamps = FirstPartStamps(1.0, 1.1, 1.2, 1.3, 1.4)
            inbox.deliver([(gen.request_id, ResponsePart(b"a", status=200, generated_tokens=1, stamps=stamps))])
            await asyncio.sleep(0)
            inbox.deliver([(gen.request_id, ResponsePart(b"b", done=True, generated_tokens=2))])
            return RunSummary(replica_id="x", finish_reason="stop")

        parts = ResponseParts(inbox, submit, door, {"interactive": 0.0}, lambda span, ago: None,
                              on_first_part=lambda name, stamps, written: seen.append((name, stamps, written)),
                              on_prefilled=prefilled.append)
        await collect(parts, dataclasses.replace(request(), received_time=0.95))
        return seen

    prefilled = []
    [(class_name, stamps, written)] = asyncio.run(main())
    assert prefilled == [request().request_id]  # once, at the first part: the router's prefill room is freed
    assert class_name == request().priority_class
    assert stamps.arrived == 1.0 and stamps.delivered is not None and written >= stamps.delivered
    # The ingress's route began before the request was made (key, body, door): its intake, stamped there.
    assert stamps.received == 0.95 and abs(stamps.stages(written)["intake"] - 0.05) < 1e-9


def test_parts_that_trail_the_dispatchs_return_still_make_the_response_by_pull():
    """By pull the last parts come on the replica's stream, which may land after `run` has returned."""
    async def main():
        inbox = None

        async def submit(gen):
            inbox.deliver([(gen.request_id, ResponsePart(b"a", status=200, generated_tokens=1))])
            asyncio.get_running_loop().call_later(0.05, inbox.deliver, [
                (gen.request_id, ResponsePart(b"b", generated_tokens=2)),
                (gen.request_id, ResponsePart(b"c", generated_tokens=3)),
                (gen.request_id, ResponsePart(b"d", done=True, generated_tokens=4))])
            return RunSummary(replica_id="x", finish_reason="stop")

        for streamed in (False, True):
            inbox, _, _, parts = make(submit)
            got = await asyncio.wait_for(collect(parts, request(), streamed=streamed), 2)
            assert b"".join(p.body for p in got) == b"abcd" and got[-1].done and not got[-1].error
    asyncio.run(main())


def test_a_response_whose_last_parts_never_come_ends_with_an_error_part(monkeypatch):
    import serve_app.http.response_parts as response_parts

    monkeypatch.setattr(response_parts, "PARTS_AFTER_DISPATCH_S", 0.05)

    async def main():
        inbox = None

        async def submit(gen):
            inbox.deliver([(gen.request_id, ResponsePart(b"a", status=200, generated_tokens=1))])
            return RunSummary(replica_id="x", finish_reason="stop")

        inbox, _, _, parts = make(submit)
        got = await asyncio.wait_for(collect(parts, request()), 2)
        assert got[-1].error and "without completing" in got[-1].error
    asyncio.run(main())
