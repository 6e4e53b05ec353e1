"""Responses stored by vLLM's Responses API live in the LLM replica that made them: retrieving or cancelling
one through the app must find it whichever replica that was (the faults app: two replicas, the store on)."""
from __future__ import annotations

import httpx
import pytest
from fault_helpers import wait_for_routable

pytestmark = pytest.mark.integration

STORED = 8  # spread over the two replicas by the router; each retrieval by a random replica would miss half


def test_a_stored_response_is_retrieved_from_the_replica_that_made_it(faults_url, model_name):
    wait_for_routable(faults_url, 2)
    with httpx.Client(base_url=faults_url, timeout=60) as http:
        made = _stored_responses(http, model_name, lambda index: f"t{10 + index} t11 t12", max_output_tokens=8)
        # 8 output tokens end each by length: vLLM calls that "incomplete".
        assert [response["status"] for response in made] == ["incomplete"] * STORED
        for response in made:
            found = http.get(f"/v1/responses/{response['id']}")
            assert found.status_code == 200, found.text
            assert (found.json()["id"], found.json()["output"]) == (response["id"], response["output"])
        # vLLM's answers, from the replica that holds the response: a finished one cannot be cancelled.
        cancelled = http.post(f"/v1/responses/{made[0]['id']}/cancel")
        assert cancelled.status_code == 400, cancelled.text
        assert cancelled.json()["error"]["message"] == "Cannot cancel a synchronous response."
        missing = http.get("/v1/responses/resp_nothing_here")
        assert missing.status_code == 404
        assert missing.json()["error"] == {"message": "Response with id 'resp_nothing_here' not found.",
                                           "type": "invalid_request_error", "param": "response_id", "code": 404}


def test_a_response_that_continues_a_stored_one_runs_on_the_replica_holding_it(faults_url, model_name):
    """vLLM answers 404 for a `previous_response_id` it does not hold: with two replicas, routing the follow-ups
    by load alone would send about half of them to the wrong one (all eight right: 1 in 256)."""
    wait_for_routable(faults_url, 2)
    with httpx.Client(base_url=faults_url, timeout=60) as http:
        looked_up_before = _holder_lookups(http)
        firsts = [made["id"] for made in _stored_responses(http, model_name, lambda index: f"t{20 + index} t21",
                                                           max_output_tokens=4)]
        for index, previous in enumerate(firsts):
            body = {"model": model_name, "input": f"t{30 + index}", "previous_response_id": previous,
                    "max_output_tokens": 4, "temperature": 0, "stream": index % 2 == 1}
            follow_up = http.post("/v1/responses", json=body)
            assert follow_up.status_code == 200, (follow_up.text, dict(follow_up.headers))
            if body["stream"]:
                assert '"type":"response.completed"' in follow_up.text.replace(" ", ""), follow_up.text[-400:]
            else:
                assert follow_up.json()["previous_response_id"] == previous
        # Each ingress replica remembers where the responses it relayed were made: a follow-up that reaches the
        # same one goes there without asking the replicas (with two ingress replicas, about half of them).
        looked_up = {ingress: [after - before for after, before in zip(counts, looked_up_before.get(ingress, (0, 0)))]
                     for ingress, counts in _holder_lookups(http).items()}
        assert sum(known + asked for known, asked in looked_up.values()) == STORED, looked_up
        assert sum(known for known, _ in looked_up.values()) >= 1, looked_up
        unknown = http.post("/v1/responses", json={"model": model_name, "input": "t1",
                                                   "previous_response_id": "resp_nothing_here"})
        assert unknown.status_code == 404, unknown.text  # vLLM's own answer, from whichever replica
        assert unknown.json()["error"]["message"] == "Response with id 'resp_nothing_here' not found."


def _stored_responses(http: httpx.Client, model_name: str, input_of, max_output_tokens: int) -> list[dict]:
    """`STORED` responses made one after another (`input_of(index)`), spread over the replicas by the router."""
    made = []
    for index in range(STORED):
        reply = http.post("/v1/responses", json={"model": model_name, "input": input_of(index),
                                                 "max_output_tokens": max_output_tokens, "temperature": 0})
        assert reply.status_code == 200, reply.text
        made.append(reply.json())
    return made


def _holder_lookups(http: httpx.Client) -> dict[str, tuple[int, int]]:
    """Per ingress replica, its stored-response look-ups so far: (answered from its memory, asked of the
    replicas). Its router stats come from whichever ingress replica the proxy picks: asked until both answered."""
    seen: dict[str, tuple[int, int]] = {}
    for _ in range(40):
        stats = http.get("/v1/router/stats").json()
        lookups = stats["stored_responses"]
        seen[stats["ingress"]["replica"]] = (lookups["holder_known"], lookups["holder_asked"])
        if len(seen) == 2:
            return seen
    raise AssertionError(f"the router stats came from {sorted(seen)} only")
