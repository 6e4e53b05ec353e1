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
