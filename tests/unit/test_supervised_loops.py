import asyncio

from serve_app.deployments.supervision import supervised


def test_a_background_loop_that_fails_is_logged_and_started_again(caplog):
    calls = []

    async def refresh_forever() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise TypeError("a bad tuning value")
        await asyncio.sleep(3600)

    async def run() -> None:
        task = asyncio.create_task(supervised(refresh_forever, restart_after_s=0))
        while len(calls) < 2:
            await asyncio.sleep(0)
        task.cancel()

    asyncio.run(run())
    assert calls == [0, 1]
    assert "refresh_forever failed; restarting it" in caplog.text


class _Remote:
    def __init__(self, answer):
        self._answer = answer

    def remote(self, *args, **kwargs):
        async def answer():
            return self._answer
        return answer()


class _Controller:
    def __init__(self, leases):
        self.lease_windows = _Remote(leases)


def test_health_says_routing_is_not_current_while_the_leases_cannot_be_applied():
    """A refresh loop that keeps failing after the controller answered (issue 18: a bad window tuning
    raised inside the router's refresh) must not look healthy: before, `health` only asked whether the
    controller answered."""
    from serve_app.config import parse_config
    from serve_app.deployments.dispatcher import Dispatcher

    now = [0.0]

    async def run():
        dispatcher = Dispatcher("ingress-1", replicas=None, controller=_Controller({"r1": 4}), config=parse_config({}),
                                clock=lambda: now[0])
        await dispatcher.refresh_replicas()
        healthy = dispatcher.health()
        now[0] = 5.0

        def broken(leases):
            raise TypeError("unexpected keyword argument 'slow_start'")

        dispatcher._core.set_replicas = broken
        try:
            await dispatcher.refresh_replicas()
        except TypeError:
            pass
        return healthy, dispatcher.health()

    healthy, failing = asyncio.run(run())
    assert healthy["routing_current"] and healthy["routable_replicas"] == 1 and healthy["refresh_failure"] is None
    assert failing["controller_answering"] and not failing["routing_current"]
    assert "TypeError: unexpected keyword argument 'slow_start'" in failing["refresh_failure"]
