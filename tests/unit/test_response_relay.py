"""vLLM's ASGI answer turned into the parts an ingress replica reads."""
from dataclasses import dataclass

from serve_app.response_relay import ResponseRelay


@dataclass
class Tally:
    generated_tokens: int = 0
    first_token_at: float | None = None


def relay_with(tally, now=10.0):
    sent, firsts = [], []
    relay = ResponseRelay(lambda part: sent.append(part) or len(sent), tally, firsts.append, clock=lambda: now)
    return relay, sent, firsts


def test_first_part_carries_status_and_headers_and_done_comes_at_the_done_event():
    tally = Tally()
    relay, sent, firsts = relay_with(tally)
    relay.on_start(200, [("content-type", "text/event-stream")])
    relay.on_body(b"", True)  # nothing to send yet
    tally.generated_tokens, tally.first_token_at = 1, 9.5
    relay.on_body(b"data: {}\n\n", True)
    tally.generated_tokens = 2
    relay.on_body(b"data: {}\n\ndata: [DONE]\n\n", True)
    relay.on_body(b"", False)  # the empty last message after [DONE] is not sent
    assert [(p.status, p.done, p.generated_tokens) for p in sent] == [(200, False, 1), (None, True, 2)]
    assert sent[0].headers == [("content-type", "text/event-stream")]
    assert firsts == [0.5, 0.5] and relay.last_seq == 2 and relay.done


def test_a_failure_before_any_body_is_an_error_part_with_status_500():
    relay, sent, _ = relay_with(Tally())
    relay.fail("the engine failed: RuntimeError", status=500)
    assert [(p.status, p.done, p.error) for p in sent] == [(500, True, "the engine failed: RuntimeError")]
    assert relay.status == 500


def test_a_whole_response_is_one_done_part():
    relay, sent, _ = relay_with(Tally(generated_tokens=5, first_token_at=9.0))
    relay.on_start(400, [("content-type", "application/json")])
    relay.on_body(b'{"error": {}}', False)
    assert [(p.status, p.done, p.body) for p in sent] == [(400, True, b'{"error": {}}')]


def test_only_the_first_part_carries_stamps_of_its_way_from_the_ingress_to_the_engine_and_into_delivery():
    from serve_app.generation import FirstPartStamps

    wall = [1000.0]
    tally = Tally()
    sent = []
    relay = ResponseRelay(lambda part: sent.append(part) or len(sent), tally, clock=lambda: 10.0,
                          wall_clock=lambda: wall[0], arrived_at=999.90, dispatched_at=999.95)
    relay.on_start(200, [])
    tally.generated_tokens, tally.first_token_at = 1, 9.75  # 0.25 s before the part is queued
    wall[0] = 1000.40
    relay.on_body(b"data: {}\n\n", True)
    relay.on_body(b"data: {}\n\ndata: [DONE]\n\n", True)
    assert sent[0].stamps == FirstPartStamps(999.90, 999.95, 1000.0, 1000.15, 1000.40)
    assert sent[1].stamps is None


def test_a_first_part_without_a_token_has_no_engine_stage():
    from serve_app.generation import FirstPartStamps

    stamps = FirstPartStamps(10.0, 10.1, 10.3, None, 10.5, delivered=10.6)
    assert set(stamps.stages(10.65)) == {"before_dispatch", "hop_to_replica", "delivery", "ingress_write", "total"}


def test_the_ingress_intake_is_a_stage_of_its_own_and_total_still_starts_at_arrival():
    from serve_app.generation import FirstPartStamps

    stamps = FirstPartStamps(10.0, 10.1, 10.3, 10.4, 10.5, delivered=10.6, received=9.996)
    stages = stamps.stages(10.65)
    assert round(stages["intake"], 6) == 0.004 and round(stages["total"], 6) == 0.65


def test_the_replica_stage_starts_when_the_call_was_received_not_when_the_relay_was_made():
    tally = Tally()
    sent = []
    relay = ResponseRelay(lambda part: sent.append(part) or len(sent), tally, clock=lambda: 10.0,
                          wall_clock=lambda: 1000.5, arrived_at=999.90, dispatched_at=999.95, received_at=999.97)
    relay.on_start(200, [])
    relay.on_body(b"data: {}\n\n", True)
    assert sent[0].stamps.replica_started == 999.97
