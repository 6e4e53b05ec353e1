"""By pull, an LLM replica refuses a call meant for another one (`MisroutedCall`), and a replica whose engine
died before the response began answers `EngineDied`; the ingress's dispatcher takes the target as lost, as
when it died, so that the request is re-routed (`ReplicaFailed`) at once."""
from __future__ import annotations

import asyncio

import pytest

from serve_app.config import parse_config
from serve_app.deployments.dispatcher import Dispatcher
from serve_app.deployments.errors import EngineDied, MisroutedCall, ReplicaFailed
from serve_app.generation import GenerationRequest


class _Remote:
    def __init__(self, answer):
        self._answer = answer
        self.calls: list[tuple] = []

    def remote(self, *args, **kwargs):
        self.calls.append((args, kwargs))

        async def answer():
            if isinstance(self._answer, BaseException):
                raise self._answer
            return self._answer
        return answer()


class _Told:
    """A call sent and not awaited (Ray Serve's `.remote` returns a response nobody needs to wait for)."""

    def __init__(self):
        self.calls: list[tuple] = []

    def remote(self, *args, **kwargs):
        self.calls.append((args, kwargs))


class _Controller:
    def __init__(self, leases):
        self.lease_windows = _Remote(leases)
        self.forget_replica = _Told()


class _Replicas:
    def __init__(self, error: BaseException):
        self.run = _Remote(error)


@pytest.mark.parametrize("answer", [MisroutedCall("a call for LLM replica r1 reached r2"),
                                    EngineDied("LLM replica r1's engine died")], ids=["misrouted", "engine_died"])
def test_a_misrouted_call_or_a_dead_engine_takes_its_target_as_lost_and_raises_replica_failed_for_a_re_route(answer):
    async def scenario():
        controller = _Controller({"r1": 4, "r2": 4})
        replicas = _Replicas(answer)
        dispatcher = Dispatcher("ingress-1", replicas=replicas, controller=controller, config=parse_config({}))
        await dispatcher.refresh_replicas()
        before = dispatcher.health()["routable_replicas"]
        request = GenerationRequest(request_id="q1", path="/v1/completions", body=b"{}", headers=[],
                                    priority_class="standard", estimated_prompt_tokens=4, max_new_tokens=4)
        with pytest.raises(ReplicaFailed):
            await dispatcher._run_on("r1", request)
        await asyncio.sleep(0)
        return before, dispatcher.health()["routable_replicas"], replicas.run.calls, controller.forget_replica.calls

    before, after, runs, forgotten = asyncio.run(scenario())
    assert runs[0][1] == {"target_replica": "r1"}
    assert (before, after) == (2, 1)  # no longer routed to; the controller told to forget it, as for a death
    assert forgotten == [(("r1",), {})]
