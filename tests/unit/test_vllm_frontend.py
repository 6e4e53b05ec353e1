"""What the replica wires into vLLM's serving layer at the engine's `generate`: the class rank as the
engine's priority, the operator's token limits, and the tokens counted (a fake engine; the real one
is exercised by the integration tests and the differential test against `vllm serve`)."""
from __future__ import annotations

import asyncio
import contextvars
from types import SimpleNamespace

import pytest
from vllm.exceptions import VLLMValidationError
from vllm.sampling_params import RequestOutputKind, SamplingParams

from serve_app.vllm_frontend import CURRENT_TALLY, RequestTally, tap_engine


def output(token_counts: list[int], finished: bool = False, finish_reason: str | None = None, prompt_len: int = 3):
    completions = [SimpleNamespace(index=i, token_ids=list(range(n)), finish_reason=finish_reason if finished else None)
                   for i, n in enumerate(token_counts)]
    return SimpleNamespace(prompt_token_ids=list(range(prompt_len)), outputs=completions, finished=finished)


class FakeEngine:
    def __init__(self, outputs):
        self.outputs = outputs
        self.calls = []

    async def generate(self, prompt, sampling_params, request_id, **kwargs):
        self.calls.append(kwargs)
        for item in self.outputs:
            if isinstance(item, BaseException):
                raise item
            yield item


def run_tapped(engine: FakeEngine, tally: RequestTally | None, params: SamplingParams, prompt=None):
    async def scenario():
        tap_engine(engine)
        CURRENT_TALLY.set(tally)
        return [o async for o in engine.generate(prompt or {"prompt_token_ids": [1, 2, 3]}, params, "r1",
                                                 priority=0)]
    return contextvars.Context().run(asyncio.run, scenario())


def test_the_class_rank_becomes_the_engine_priority_and_delta_tokens_are_summed():
    engine = FakeEngine([output([1]), output([1]), output([1], finished=True, finish_reason="length")])
    tally = RequestTally(priority=2)
    run_tapped(engine, tally, SamplingParams(max_tokens=3, output_kind=RequestOutputKind.DELTA))
    assert engine.calls[0]["priority"] == 2
    assert (tally.prompt_tokens, tally.generated_tokens, tally.finish_reason) == (3, 3, "length")
    assert tally.first_token_s is not None


def test_cumulative_outputs_are_not_counted_twice_and_every_choice_counts():
    engine = FakeEngine([output([1, 2]), output([3, 4], finished=True, finish_reason="stop")])
    tally = RequestTally(priority=0)
    run_tapped(engine, tally, SamplingParams(max_tokens=8, n=2, output_kind=RequestOutputKind.CUMULATIVE))
    assert tally.generated_tokens == 7


def test_an_engine_that_dies_under_a_request_marks_its_tally_and_the_error_goes_on_to_vllm():
    from vllm.v1.engine.exceptions import EngineDeadError

    engine = FakeEngine([output([1]), EngineDeadError()])
    tally = RequestTally(priority=0)
    with pytest.raises(EngineDeadError):
        run_tapped(engine, tally, SamplingParams(max_tokens=8, output_kind=RequestOutputKind.DELTA))
    assert tally.engine_dead and tally.generated_tokens == 1


def test_an_engine_found_errored_counts_as_dead_before_generate_is_called():
    errored = [False]
    tally = RequestTally.for_request("/v1/completions", 0, SimpleNamespace(max_prompt_tokens=None,
                                     max_output_tokens=None), engine_errored=lambda: errored[0])
    assert not tally.engine_dead
    errored[0] = True  # vLLM's app refuses a request to a dead engine itself, without calling `generate`
    assert tally.engine_dead and not tally.saw_engine_dead


def test_other_engine_errors_do_not_mark_the_engine_dead():
    engine = FakeEngine([ValueError("bad request")])
    tally = RequestTally(priority=0)
    with pytest.raises(ValueError):
        run_tapped(engine, tally, SamplingParams(max_tokens=8, output_kind=RequestOutputKind.DELTA))
    assert not tally.engine_dead


def test_an_aborted_request_has_no_finish_reason():
    engine = FakeEngine([output([1], finished=True, finish_reason="abort")])
    tally = RequestTally(priority=0)
    run_tapped(engine, tally, SamplingParams(max_tokens=3, output_kind=RequestOutputKind.DELTA))
    assert tally.finish_reason is None


def test_a_prompt_over_the_limit_is_refused_when_generate_is_called():
    tally = RequestTally(priority=0, prompt_param="messages", max_prompt_tokens=2)
    with pytest.raises(VLLMValidationError, match="at most 2") as refused:
        run_tapped(FakeEngine([]), tally, SamplingParams(max_tokens=3))
    assert refused.value.parameter == "messages"


def test_a_default_budget_above_the_cap_is_capped():
    params = SamplingParams(max_tokens=500)
    run_tapped(FakeEngine([]), RequestTally(priority=0, max_output_tokens=480), params)
    assert params.max_tokens == 480


def test_calls_that_are_not_ours_pass_unchanged():
    engine = FakeEngine([output([1], finished=True, finish_reason="stop")])
    run_tapped(engine, None, SamplingParams(max_tokens=1))
    assert engine.calls[0]["priority"] == 0


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", b"{}", "messages"), ("/v1/messages", b"{}", "messages"),
    ("/v1/completions", b"{}", "prompt"), ("/v1/responses", b"{}", "input"),
    ("/invocations", b'{"messages": [{"role": "user", "content": "t1"}]}', "messages"),
    ("/invocations", b'{"prompt": "t1"}', "prompt"), ("/invocations", b"not json", "prompt"),
])
def test_the_prompt_is_named_as_the_route_or_an_invocations_body_names_it(path, body, param):
    http = SimpleNamespace(max_prompt_tokens=None, max_output_tokens=None)
    assert RequestTally.for_request(path, 0, http, body).prompt_param == param
