"""Background loops of the deployments run for good: a failure is logged and the loop started again,
never left dead (a dead expiry, lease or load-report loop would stop routing with nothing said)."""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from serve_app.telemetry.log_names import service_logger

logger = service_logger("supervision")


async def supervised(loop: Callable[[], Awaitable[None]], restart_after_s: float = 1.0) -> None:
    while True:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s failed; restarting it in %.0fs", getattr(loop, "__name__", loop), restart_after_s)
            await asyncio.sleep(restart_after_s)


def start_supervised(loop: Callable[[], Awaitable[None]], restart_after_s: float = 1.0) -> asyncio.Task:
    return asyncio.create_task(supervised(loop, restart_after_s))
