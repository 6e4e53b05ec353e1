"""Awaiting a Ray Serve call with a deadline, for callers that must not hang on a peer that is gone."""
from __future__ import annotations

import asyncio
from typing import Any

from ray.serve.handle import DeploymentResponse


async def answer_within(call: DeploymentResponse, timeout_s: float) -> Any:
    """The call's answer, or the error (a timeout included) that stood in for it; a call that did not
    answer is cancelled."""
    try:
        return await asyncio.wait_for(resolve(call), timeout_s)
    except Exception as error:  # the caller decides what a missing answer means, never a hang
        call.cancel()
        return error


async def resolve(call: DeploymentResponse) -> Any:
    """The call's answer, as a coroutine (for `asyncio.ensure_future` and `wait_for`)."""
    return await call
