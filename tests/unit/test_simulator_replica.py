"""Replica: KV block accounting, recompute preemption and priority, on a tiny case with an exact schedule.

Engine: 4 blocks of 4 tokens, every step takes 1 s. Two requests of prompt 4 / output 6 arrive at
t=0. Step 0 prefills both (1 block each; first tokens at t=1). Steps 1..4 decode; step 1 takes a
second block each (pool full). Step 5 needs a third block for both: 0 free, so the lowest-priority
latest request is preempted (its 2 blocks freed, 1 taken by the other). The survivor finishes at
t=6; the victim re-prefills prompt + 5 generated tokens (9 tokens, 3 blocks) in step 6 and
finishes at t=7.
"""
import pytest

from autoscaling.simulator.replica import EngineConfig, EngineRequest, Replica
from autoscaling.simulator.step_model import StepModel

ONE_SECOND_STEPS = StepModel(base_s=1.0, per_decode_seq_s=0.0, per_prefill_token_s=0.0, per_context_token_s=0.0)
TINY = EngineConfig(max_num_seqs=4, max_num_batched_tokens=16, num_kv_blocks=4, block_size=4)


def _run(replica: Replica) -> list[tuple[float, int]]:
    trace = []
    while replica.step_end_s is not None:
        t = replica.step_end_s
        replica.complete_step()
        trace.append((t, replica.used_blocks))
    return trace


@pytest.mark.parametrize("priorities, victim", [((0, 0), "b"), ((1, 0), "a")])
def test_preemption_frees_the_lowest_priority_latest_request(priorities, victim):
    replica = Replica("r", ONE_SECOND_STEPS, TINY)
    a = EngineRequest("a", prompt_len=4, output_len=6, priority=priorities[0])
    b = EngineRequest("b", prompt_len=4, output_len=6, priority=priorities[1])
    replica.add(a, 0.0)
    replica.add(b, 0.0)
    assert replica.start_if_idle(0.0) is True and replica.start_if_idle(0.0) is False
    trace = _run(replica)
    survivor = b if victim == "a" else a
    preempted = a if victim == "a" else b
    # Blocks held once each step has ended and the next is scheduled: 4 from step 1 on; at t=5 the
    # victim's 2 are freed and the survivor takes 1 (3); at t=6 the survivor's 3 are freed and the
    # victim's re-prefill takes 3; at t=7 nothing is left.
    assert trace == [(1.0, 4), (2.0, 4), (3.0, 4), (4.0, 4), (5.0, 3), (6.0, 3), (7.0, 0)]
    assert (survivor.first_token_s, survivor.finish_s, survivor.preemptions) == (1.0, 6.0, 0)
    assert (preempted.first_token_s, preempted.finish_s, preempted.preemptions) == (1.0, 7.0, 1)
    assert replica.preemptions_total == 1 and replica.num_requests == 0 and replica.steps_run == 7


def test_no_preemption_when_blocks_suffice_and_chunked_prefill_splits_a_long_prompt():
    engine = EngineConfig(max_num_seqs=4, max_num_batched_tokens=8, num_kv_blocks=100, block_size=4)
    replica = Replica("r", ONE_SECOND_STEPS, engine)
    long = EngineRequest("long", prompt_len=20, output_len=2)
    replica.add(long, 0.0)
    replica.start_if_idle(0.0)
    _run(replica)
    # 20 prompt tokens at 8 per step: steps 0, 1, 2 (first token at t=3), one decode step.
    assert (long.first_token_s, long.finish_s, replica.preemptions_total) == (3.0, 4.0, 0)
    assert replica.used_blocks == 0


def test_max_num_seqs_holds_a_request_back_until_a_slot_frees():
    engine = EngineConfig(max_num_seqs=1, max_num_batched_tokens=64, num_kv_blocks=100, block_size=4)
    replica = Replica("r", ONE_SECOND_STEPS, engine)
    first, second = EngineRequest("1", 4, 3), EngineRequest("2", 4, 3)
    replica.add(first, 0.0)
    replica.add(second, 0.0)
    replica.start_if_idle(0.0)
    _run(replica)
    assert (first.first_token_s, first.finish_s) == (1.0, 3.0)
    assert (second.first_token_s, second.finish_s) == (4.0, 6.0)


def test_step_time_follows_the_model():
    model = StepModel(base_s=0.01, per_decode_seq_s=0.001, per_prefill_token_s=0.0001, per_context_token_s=0.0,
                      frontend_overhead_s=0.5)
    replica = Replica("r", model, EngineConfig(num_kv_blocks=100, block_size=16))
    req = EngineRequest("x", prompt_len=100, output_len=2)
    replica.add(req, 0.0)
    replica.start_if_idle(0.0)
    _run(replica)
    prefill = 0.01 + 100 * 0.0001
    assert req.first_token_s == pytest.approx(prefill + 0.5)
    assert req.finish_s == pytest.approx(prefill + 0.01 + 0.001 + 0.5)


def test_recent_inter_token_time_is_the_decoding_steps_time_over_the_horizon():
    decode_costs = StepModel(base_s=1.0, per_decode_seq_s=0.5, per_prefill_token_s=0.0, per_context_token_s=0.0)
    replica = Replica("r", decode_costs, TINY)
    replica.add(EngineRequest("a", prompt_len=4, output_len=3), 0.0)
    replica.add(EngineRequest("b", prompt_len=4, output_len=3), 0.0)
    replica.start_if_idle(0.0)
    assert replica.recent_inter_token_s(0.0) is None  # the prefill step decodes nothing
    trace = _run(replica)
    # Step 0 prefills both (1 s); steps 1 and 2 decode both: 1 + 2 x 0.5 = 2 s each, ending at 3 and 5.
    assert [t for t, _ in trace] == [1.0, 3.0, 5.0]
    assert replica.recent_inter_token_s(5.0) == pytest.approx(2.0)
    assert replica.recent_inter_token_s(10.5) is None  # both decode steps ended over 5 s ago
