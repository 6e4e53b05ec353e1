"""Where the stored responses an ingress relayed were made: a continuation (`previous_response_id`) goes
there at once instead of asking every LLM replica in turn. The pieces: the response's id read from its
first bytes (vLLM's answer, streamed or whole), the bounded map, and the dispatcher learning from a run."""
from __future__ import annotations

import asyncio
import json

import pytest
from openai.types.responses import Response, ResponseCreatedEvent

from serve_app.config import parse_config
from serve_app.deployments.dispatcher import Dispatcher
from serve_app.generation import GenerationRequest, RunSummary
from serve_app.openai_api import stored_response_id
from serve_app.policy.response_holders import ResponseHolders
from serve_app.response_relay import ResponseRelay


def test_the_first_id_of_a_responses_answer_is_the_responses_own_as_openais_models_order_their_fields():
    # vLLM's answers are these models (its ResponsesResponse and ResponseCreatedEvent extend them): the whole
    # response begins with its id, and the first event of a stream with the response.
    assert list(Response.model_fields)[0] == "id"
    assert list(ResponseCreatedEvent.model_fields)[0] == "response"
    created = {"response": {"id": "resp_7f3a", "created_at": 1, "output": [{"id": "msg_1", "type": "message"}]},
               "sequence_number": 0, "type": "response.created"}
    assert stored_response_id(f"event: response.created\ndata: {json.dumps(created)}\n\n".encode()) == "resp_7f3a"
    whole = {"id": "resp_9c", "object": "response", "output": [{"id": "msg_2", "type": "message"}]}
    assert stored_response_id(json.dumps(whole, separators=(",", ":")).encode()) == "resp_9c"
    assert stored_response_id(json.dumps({"id": 'resp_"quoted"'}).encode()) == 'resp_"quoted"'


@pytest.mark.parametrize("first_bytes", [b"", b'{"error": {"message": "no"}}', b"event: ping\n\n"])
def test_an_answer_naming_no_id_gives_none(first_bytes):
    assert stored_response_id(first_bytes) is None


def test_a_holder_is_known_while_it_is_routed_to_and_forgotten_once_gone():
    holders = ResponseHolders()
    holders.learn("resp_a", "llm-1")
    assert holders.holder("resp_a", ["llm-1", "llm-2"]) == "llm-1"
    assert holders.holder("resp_b", ["llm-1", "llm-2"]) is None  # relayed by another ingress: ask
    assert holders.holder("resp_a", ["llm-2"]) is None  # its replica is gone, and its responses with it
    assert holders.holder("resp_a", ["llm-1", "llm-2"]) is None and len(holders) == 0
    assert holders.stats() == {"remembered": 0, "holder_known": 1, "holder_asked": 3}


def test_the_oldest_entries_go_first_beyond_the_capacity():
    holders = ResponseHolders(capacity=2)
    for index in range(3):
        holders.learn(f"resp_{index}", f"llm-{index}")
    routable = ["llm-0", "llm-1", "llm-2"]
    assert [holders.holder(f"resp_{index}", routable) for index in range(3)] == [None, "llm-1", "llm-2"]
    with pytest.raises(ValueError):
        ResponseHolders(capacity=0)


def test_the_relay_keeps_the_first_bytes_it_sent():
    class Tally:
        generated_tokens, first_token_at, engine_submitted_at, engine_core_times, engine_dead = 0, None, None, None, False

    relay = ResponseRelay(lambda part: 1, Tally())
    relay.on_start(200, [])
    relay.on_body(b"", True)
    relay.on_body(b"event: response.created\n", True)
    relay.on_body(b"event: response.in_progress\n", True)
    assert relay.first_bytes == b"event: response.created\n"


class _Run:
    def __init__(self, summary: RunSummary):
        self._summary = summary

    def remote(self, *args, **kwargs):
        async def answer():
            return self._summary
        return answer()


class _Leases:
    def remote(self, *args, **kwargs):
        async def answer():
            return {"llm-1": 4, "llm-2": 4}
        return answer()


def test_the_dispatcher_learns_where_a_response_was_made_from_the_replicas_summary():
    async def scenario():
        replicas = type("Replicas", (), {"run": _Run(RunSummary("llm-2", response_id="resp_made_on_2"))})()
        controller = type("Controller", (), {"lease_windows": _Leases()})()
        dispatcher = Dispatcher("ingress-1", replicas=replicas, controller=controller, config=parse_config({}))
        await dispatcher.refresh_replicas()
        request = GenerationRequest(request_id="q1", path="/v1/responses", body=b"{}", headers=[],
                                    priority_class="standard", estimated_prompt_tokens=4, max_new_tokens=4)
        await dispatcher._run_on("llm-2", request)
        return dispatcher.response_holder("resp_made_on_2"), dispatcher.stats()["stored_responses"]

    holder, stats = asyncio.run(scenario())
    assert holder == "llm-2" and stats == {"remembered": 1, "holder_known": 1, "holder_asked": 0}
