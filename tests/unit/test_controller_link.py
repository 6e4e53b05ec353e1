"""An LLM replica's load reports to the controller (`ControllerLink.report_load_forever`): a replica the
controller no longer knows registers again, except once its engine is dead. Registering then put a dead
engine back in the leases, and an ingress re-routed requests to it until their attempts were spent."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from serve_app.config import parse_config
from serve_app.deployments.controller_link import ControllerLink
from serve_app.replica_ledger import ReplicaLedger


class _Call:
    def __init__(self, answer=None):
        self.answer, self.calls = answer, 0

    def remote(self, *args, **kwargs):
        self.calls += 1

        async def answer():
            return self.answer
        return answer()


def _reports(engine_dead: list[bool], periods: int) -> SimpleNamespace:
    """`periods` report periods of a replica the controller does not know (it answers None), with
    `engine_dead[i]` its engine's state in period i: how often it reported and registered."""
    controller = SimpleNamespace(report_load=_Call(None), report_allocation=_Call(None))
    link = ControllerLink(controller, "llm-1", parse_config({}))
    vllm_config = SimpleNamespace(cache_config=SimpleNamespace(num_gpu_blocks=8, block_size=16),
                                  scheduler_config=SimpleNamespace(max_num_seqs=4))
    period = iter(range(10_000))
    current = {"period": 0}

    def dead() -> bool:
        current["period"] = next(period)
        return engine_dead[min(current["period"], len(engine_dead) - 1)]

    async def run():
        task = asyncio.create_task(link.report_load_forever(vllm_config, ReplicaLedger({}, 10.0), lambda: 0,
                                                            period_s=0.001, engine_dead=dead))
        while current["period"] < periods:
            await asyncio.sleep(0.001)
        task.cancel()
    asyncio.run(run())
    return SimpleNamespace(reports=controller.report_load.calls, registrations=controller.report_allocation.calls)


def test_a_replica_the_controller_forgot_registers_again_while_its_engine_lives():
    counts = _reports([False], periods=5)
    assert counts.reports >= 4 and counts.registrations == counts.reports


def test_a_replica_whose_engine_died_neither_reports_nor_registers_again():
    counts = _reports([False, False, True], periods=20)
    assert counts.reports == counts.registrations == 2
