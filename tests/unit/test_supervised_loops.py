import asyncio

from serve_app.deployments.dispatcher import _supervised


def test_a_background_loop_that_fails_is_logged_and_started_again(caplog):
    calls = []

    async def refresh_forever() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise TypeError("a bad tuning value")
        await asyncio.sleep(3600)

    async def run() -> None:
        task = asyncio.create_task(_supervised(refresh_forever, restart_after_s=0))
        while len(calls) < 2:
            await asyncio.sleep(0)
        task.cancel()

    asyncio.run(run())
    assert calls == [0, 1]
    assert "refresh_forever failed; restarting it" in caplog.text
