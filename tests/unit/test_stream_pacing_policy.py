"""Stream pacing (serve_app.policy.stream_pacing): an ingress's budget of writes per second shared out over
its sending streams, bounded by each class's TPOT target and floored by its `stream_coalesce_s`; and
through the ingress's response parts: a fast stream's tokens in fewer writes, a slow one untouched, a
stream's end never held."""
import asyncio
import time

import pytest

from serve_app.delivery import Inbox
from serve_app.generation import ResponsePart, RunSummary
from serve_app.http.response_parts import ResponseParts
from serve_app.policy.stream_pacing import StreamPacing, next_write_wait_s
from serve_app.telemetry.tracing import RequestSpan
from tests.unit.test_response_parts import Door, request


def test_each_stream_gets_its_share_of_the_budget():
    pacing = StreamPacing(writes_per_s=2000, hold_max_tpots=4)
    assert pacing.min_gap_s(0, tpot_slo_s=0.08) == 0.0
    assert pacing.min_gap_s(20, tpot_slo_s=0.08) == pytest.approx(0.01)
    assert pacing.min_gap_s(400, tpot_slo_s=0.08) == pytest.approx(0.2)


def test_no_stream_is_held_past_its_class_bound_and_the_class_floor_always_holds():
    pacing = StreamPacing(writes_per_s=100, hold_max_tpots=4)
    assert pacing.min_gap_s(1000, tpot_slo_s=0.05) == pytest.approx(0.2)  # 10 s share, bounded by 4 x 50 ms
    assert pacing.min_gap_s(1, tpot_slo_s=0.05, floor_s=0.3) == pytest.approx(0.3)
    assert StreamPacing(writes_per_s=None).min_gap_s(1000, tpot_slo_s=1.0, floor_s=0.25) == 0.25
    assert StreamPacing(writes_per_s=None).min_gap_s(1000, tpot_slo_s=1.0) == 0.0


def test_the_next_write_waits_only_for_what_is_left_of_the_gap():
    assert next_write_wait_s(None, 0.2, now=5.0) == 0.0  # the first write
    assert next_write_wait_s(5.0, 0.2, now=5.05) == pytest.approx(0.15)
    assert next_write_wait_s(5.0, 0.2, now=5.3) == 0.0  # tokens slower than the gap: never held
    assert next_write_wait_s(5.0, 0.0, now=5.0) == 0.0


def test_nonsense_settings_are_refused():
    with pytest.raises(ValueError, match="writes_per_s"):
        StreamPacing(writes_per_s=0)
    with pytest.raises(ValueError, match="hold_max_tpots"):
        StreamPacing(writes_per_s=10, hold_max_tpots=-1)


def _paced(writes_per_s, tpot_slo_s=1.0):
    inbox = Inbox()
    parts = ResponseParts(inbox, None, Door(), {"interactive": 0.0}, lambda span, ago: None,
                          StreamPacing(writes_per_s), {"interactive": tpot_slo_s})
    return inbox, parts


def _token_source(inbox, tokens, interval_s):
    async def submit(gen):
        for n in range(1, tokens + 1):
            inbox.deliver([(gen.request_id, ResponsePart(b"%d," % n, done=n == tokens, generated_tokens=n))])
            await asyncio.sleep(interval_s)
        return RunSummary(replica_id="x", finish_reason="length")
    return submit


async def _writes(parts, gen):
    """Each write's body and when it was written."""
    return [(part.body, time.monotonic()) async for part in parts.parts(gen, RequestSpan("test"), True)]


def test_fast_streams_share_the_budget_in_fewer_writes_with_every_token_in_order():
    async def main():
        inbox, parts = _paced(writes_per_s=10)
        parts._submit = _token_source(inbox, tokens=30, interval_s=0.01)
        both = await asyncio.gather(_writes(parts, request("a")), _writes(parts, request("b")))
        for writes in both:
            assert b"".join(body for body, _ in writes) == b"".join(b"%d," % n for n in range(1, 31))
            # Two streams on 10 writes/s: one write per ~0.2 s over ~0.3 s, against 30 unpaced.
            assert 2 <= len(writes) <= 5, [body for body, _ in writes]
        assert parts.streaming == 0 and parts.stream_writes == sum(len(w) for w in both)
    asyncio.run(main())


def test_a_stream_slower_than_its_share_is_never_held():
    async def main():
        inbox, parts = _paced(writes_per_s=10)  # one stream: a write every 0.1 s allowed
        sent_at = []

        async def submit(gen):
            for n in range(1, 5):
                sent_at.append(time.monotonic())
                inbox.deliver([(gen.request_id, ResponsePart(b"%d," % n, done=n == 4, generated_tokens=n))])
                await asyncio.sleep(0.15)
            return RunSummary(replica_id="x", finish_reason="length")

        parts._submit = submit
        writes = await _writes(parts, request())
        assert [body for body, _ in writes] == [b"1,", b"2,", b"3,", b"4,"]
        assert max(at - sent for (_, at), sent in zip(writes, sent_at)) < 0.05
    asyncio.run(main())


def test_a_stream_end_is_written_at_once_even_mid_hold():
    async def main():
        inbox, parts = _paced(writes_per_s=0.5)  # one stream: a write every 2 s allowed
        parts._submit = _token_source(inbox, tokens=3, interval_s=0.01)
        started = time.monotonic()
        writes = await _writes(parts, request())
        assert [body for body, _ in writes] == [b"1,", b"2,3,"]
        assert writes[-1][1] - started < 0.5
    asyncio.run(main())
