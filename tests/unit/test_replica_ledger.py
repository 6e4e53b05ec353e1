"""A replica's books: only requests served whole count towards lengths and SLO attainment."""
from serve_app.replica_ledger import ReplicaLedger, RequestOutcome

SLOS = {"interactive": (0.5, 0.05)}


def outcome(finish_reason="stop", delivered_whole=True, ttft=0.1, duration=0.5, generated=11, prompt=20):
    return RequestOutcome("interactive", finish_reason, prompt, generated, ttft, duration, delivered_whole)


def test_outstanding_tokens_follow_start_and_finish():
    ledger = ReplicaLedger(SLOS, slo_window_s=30)
    ledger.start("a", 100)
    ledger.start("b", 50)
    assert (ledger.in_flight, ledger.outstanding_tokens) == (2, 150)
    ledger.finish("a", outcome(), now=1.0)
    assert (ledger.in_flight, ledger.outstanding_tokens, ledger.completed) == (1, 50, 1)


def test_a_request_whose_client_left_is_not_a_length_sample_even_with_a_finish_reason():
    """With n > 1, choices that ended before the client left carry `stop`: the request was still cut short
    (the controller's p95 output length would be pulled down and its KV window cap up)."""
    ledger = ReplicaLedger(SLOS, slo_window_s=30)
    for request_id, delivered in (("cut", False), ("whole", True)):
        ledger.start(request_id, 10)
        ledger.finish(request_id, outcome(generated=3 if not delivered else 11, delivered_whole=delivered), now=1.0)
    ledger.start("aborted", 10)
    ledger.finish("aborted", outcome(finish_reason=None), now=1.0)
    assert ledger.take_served_lengths() == [(20, 11)]
    assert ledger.take_served_lengths() == []
    assert ledger.completed == 3
    assert ledger.slo_attainment(now=2.0) == {"interactive": (1.0, 1)}


def test_slo_attainment_uses_tpot_after_the_first_token():
    ledger = ReplicaLedger(SLOS, slo_window_s=30)
    ledger.start("fast", 1)
    ledger.finish("fast", outcome(ttft=0.1, duration=0.6, generated=11), now=1.0)  # TPOT 0.05: met
    ledger.start("slow", 1)
    ledger.finish("slow", outcome(ttft=0.1, duration=0.7, generated=11), now=1.0)  # TPOT 0.06: missed
    ledger.start("other", 1)
    ledger.finish("other", RequestOutcome("unknown", "stop", 1, 5, 0.1, 0.2, True), now=1.0)
    assert ledger.slo_attainment(now=2.0) == {"interactive": (0.5, 2)}
    assert ledger.slo_attainment(now=40.0) == {}
