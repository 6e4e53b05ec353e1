"""vLLM's ASGI answer turned into the parts an ingress replica reads."""
from dataclasses import dataclass

from serve_app.response_relay import ResponseRelay


@dataclass
class Tally:
    generated_tokens: int = 0
    first_token_at: float | None = None
    engine_submitted_at: float | None = None
    engine_core_times: tuple[float, float, float] | None = None
    engine_dead: bool = False


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


def test_vllms_error_event_for_a_dead_engine_mid_stream_becomes_the_replicas_failure():
    from serve_app.response_relay import ENGINE_DIED_MESSAGE

    tally = Tally(generated_tokens=1, first_token_at=9.5)
    relay, sent, _ = relay_with(tally)
    relay.on_start(200, [("content-type", "text/event-stream")])
    relay.on_body(b"data: {}\n\n", True)
    tally.engine_dead = True
    relay.on_body(b'data: {"error": {"message": "EngineCore encountered an issue", "code": 500}}\n\n', True)
    relay.on_body(b"data: [DONE]\n\n", True)
    relay.on_body(b"", False)
    assert [(p.body, p.done, p.error) for p in sent] == [(b"data: {}\n\n", False, None),
                                                         (b"", True, ENGINE_DIED_MESSAGE)]
    assert "model replica" in ENGINE_DIED_MESSAGE


def test_an_engine_dead_before_anything_was_sent_sends_nothing_so_the_call_can_fail_as_a_lost_replica():
    relay, sent, _ = relay_with(Tally(engine_dead=True))
    relay.on_start(500, [("content-type", "application/json")])
    relay.on_body(b'{"error": {"message": "EngineCore encountered an issue"}}', False)
    assert sent == [] and relay.done


def test_a_failure_reported_for_a_dead_engine_is_the_replicas_failure_or_nothing_if_unbegun():
    from serve_app.response_relay import ENGINE_DIED_MESSAGE

    unbegun, sent_unbegun, _ = relay_with(Tally(engine_dead=True))
    unbegun.fail("the engine failed: EngineDeadError", status=500)
    begun_tally = Tally(generated_tokens=1, first_token_at=9.5)
    begun, sent_begun, _ = relay_with(begun_tally)
    begun.on_start(200, [])
    begun.on_body(b"data: {}\n\n", True)
    begun_tally.engine_dead = True
    begun.fail("the engine failed: EngineDeadError", status=500)
    assert sent_unbegun == [] and unbegun.done
    assert [(p.done, p.error) for p in sent_begun[1:]] == [(True, ENGINE_DIED_MESSAGE)] and begun.status == 200


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


def test_the_first_part_splits_the_replicas_stage_at_the_engines_hand_over_queue_and_prefill():
    """The engine's times come on the replica's monotonic clock (the core's process shares it) and go out on
    the wall clock of the other stamps; their stages add up to the replica's stage."""
    from serve_app.generation import EngineStamps

    tally = Tally()
    sent = []
    relay = ResponseRelay(lambda part: sent.append(part) or len(sent), tally, clock=lambda: 10.0,
                          wall_clock=lambda: 1000.40, arrived_at=999.90, dispatched_at=999.95, received_at=1000.0)
    relay.on_start(200, [])
    # monotonic 9.65 is wall 1000.05: handed to the engine 50 ms after the call began
    tally.engine_submitted_at, tally.engine_core_times = 9.65, (9.66, 9.70, 9.74)
    tally.generated_tokens, tally.first_token_at = 1, 9.75
    relay.on_body(b"data: {}\n\n", True)
    engine = sent[0].stamps.engine
    assert [round(t, 6) for t in (engine.submitted, engine.queued, engine.scheduled, engine.core_first_token)] == \
        [1000.05, 1000.06, 1000.10, 1000.14]
    stages = {k: round(v, 6) for k, v in sent[0].stamps.stages(1000.45).items()}
    assert stages["replica_before_engine"] == 0.05 and stages["engine_intake"] == 0.01
    assert stages["engine_queue"] == 0.04 and stages["engine_prefill"] == 0.04 and stages["engine_output"] == 0.01
    split = ("replica_before_engine", "engine_intake", "engine_queue", "engine_prefill", "engine_output")
    assert round(sum(stages[k] for k in split), 6) == stages["replica_to_first_token"] == 0.15
    # Without the core's stats only the hand-over splits the stage; without a hand-over, nothing does.
    only_submitted = EngineStamps(1000.05)
    assert only_submitted.stages(1000.0, 1000.15).keys() == {"replica_before_engine"}
    bare, parts, _ = relay_with(Tally(generated_tokens=1, first_token_at=9.9))
    bare.on_start(200, [])
    bare.on_body(b"data: {}\n\n", True)
    assert parts[0].stamps.engine is None


def test_the_engine_cores_times_are_read_from_vllms_request_stats_only_when_all_are_set():
    from types import SimpleNamespace

    from serve_app.vllm_frontend import engine_core_times

    stats = SimpleNamespace(queued_ts=5.0, scheduled_ts=5.1, first_token_ts=5.2)
    assert engine_core_times(SimpleNamespace(metrics=stats)) == (5.0, 5.1, 5.2)
    assert engine_core_times(SimpleNamespace(metrics=SimpleNamespace(queued_ts=5.0, scheduled_ts=0.0,
                                                                      first_token_ts=5.2))) is None
    assert engine_core_times(SimpleNamespace(metrics=None)) is None
    assert engine_core_times(SimpleNamespace()) is None
