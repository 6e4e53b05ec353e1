"""Private Ray APIs go through serve_app/ray_compat.py: checked against the pinned Ray at import, their
failures logged with the error (rate-limited), fallbacks only where documented."""
from __future__ import annotations

import asyncio
import importlib
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
import ray.serve.context
from ray.serve._private.request_router.pow_2_router import PowerOfTwoChoicesRequestRouter
from ray.serve.exceptions import RayServeException
from ray.serve.request_router import RequestRouter

from serve_app import ray_compat
from serve_app.deployments.serve_states import stopping_replica_ids
from serve_app.routing.targeted import TargetedRequestRouter

ROOT = Path(__file__).resolve().parents[2]
PRIVATE_MARKERS = ("._private", "_get_global_client", "._controller", "._fulfill_next_pending_request")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _fresh_warnings(monkeypatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(ray_compat, "_warnings", ray_compat.RepeatedWarnings(ray_compat.logger, 300.0, clock))
    return clock


def _serve_fails(monkeypatch, error: Exception) -> None:
    def no_client(*args, **kwargs):
        raise error

    monkeypatch.setattr(ray.serve.context, "_get_global_client", no_client)


def test_the_pinned_version_is_the_checked_one_and_a_different_one_warns_once(monkeypatch, caplog):
    pinned = next(line for line in (ROOT / "pyproject.toml").read_text().splitlines() if '"ray[serve]==' in line)
    assert f"=={ray_compat.CHECKED_RAY_VERSION}\"" in pinned
    assert ray_compat.check_ray_version(ray_compat.CHECKED_RAY_VERSION)
    assert not caplog.records
    monkeypatch.setattr(ray, "__version__", "2.61.0")
    with caplog.at_level(logging.WARNING, logger="ray.serve.llmserve.ray_compat"):
        assert not ray_compat.check_ray_version()
    assert [r.getMessage() for r in caplog.records] == [
        "Ray 2.61.0 is installed but serve_app/ray_compat.py was checked against Ray 2.60.0: the private Ray APIs "
        "it wraps may have changed"]


def test_importing_ray_compat_checks_the_version(monkeypatch, caplog):
    monkeypatch.setattr(ray, "__version__", "9.9.9")
    try:
        with caplog.at_level(logging.WARNING, logger="ray.serve.llmserve.ray_compat"):
            importlib.reload(ray_compat)
        assert any("Ray 9.9.9 is installed" in r.getMessage() for r in caplog.records)
    finally:
        monkeypatch.undo()
        importlib.reload(ray_compat)


def test_a_failing_controller_call_is_logged_with_its_error_and_returns_none(monkeypatch, caplog):
    _fresh_warnings(monkeypatch)
    _serve_fails(monkeypatch, RayServeException("There is no Serve instance running on this Ray cluster."))
    with caplog.at_level(logging.WARNING, logger="ray.serve.llmserve.ray_compat"):
        assert asyncio.run(ray_compat.deployment_replica_states("app", "LLMReplica")) is None
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "get_deployment_details failed" in record.getMessage()
    assert "RayServeException: There is no Serve instance running" in record.getMessage()
    assert "app/LLMReplica" in record.getMessage()


def test_stopping_replicas_fall_back_to_none_stopping_with_the_reason_logged_once_per_interval(monkeypatch, caplog):
    """Before ray_compat: every failure became an empty set, logged by type name only, on every refresh."""
    clock = _fresh_warnings(monkeypatch)
    _serve_fails(monkeypatch, RuntimeError("controller restarting"))
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert asyncio.run(stopping_replica_ids("app", "LLMReplica")) == set()
            clock.now += 10
        assert len(caplog.records) == 1 and "RuntimeError: controller restarting" in caplog.records[0].getMessage()
        clock.now += 300
        asyncio.run(stopping_replica_ids("app", "LLMReplica"))
    assert len(caplog.records) == 2 and "(and 2 times more in the last 330 s)" in caplog.records[1].getMessage()


def test_stopping_replicas_read_from_the_serve_controller(monkeypatch):
    replicas = [SimpleNamespace(replica_id=rid, state=SimpleNamespace(value=state))
                for rid, state in [("a", "RUNNING"), ("b", "STOPPING")]]

    async def details():
        return SimpleNamespace(replicas=replicas)

    remote = SimpleNamespace(remote=lambda app, deployment: details())
    client = SimpleNamespace(_controller=SimpleNamespace(get_deployment_details=remote))
    monkeypatch.setattr(ray.serve.context, "_get_global_client", lambda: client)
    assert asyncio.run(ray_compat.deployment_replica_states("app", "LLMReplica")) == {"a": "RUNNING", "b": "STOPPING"}
    assert asyncio.run(stopping_replica_ids("app", "LLMReplica")) == {"b"}


def test_repeated_warnings_are_rate_limited_per_text_and_bounded():
    clock, log = FakeClock(), logging.getLogger("test_ray_compat")
    warnings = ray_compat.RepeatedWarnings(log, interval_s=60, clock=clock)
    assert warnings.warn("a") and warnings.warn("b") and not warnings.warn("a")
    clock.now = 61
    assert warnings.warn("a")
    for n in range(200):
        warnings.warn(f"text {n}")
    assert len(warnings._seen) == warnings.MAX_TEXTS


def test_targeted_router_subclasses_rays_router_and_keeps_the_base_matching():
    assert issubclass(TargetedRequestRouter, PowerOfTwoChoicesRequestRouter)
    assert ray_compat.PowerOfTwoChoicesRequestRouter is PowerOfTwoChoicesRequestRouter
    assert TargetedRequestRouter._fulfill_next_pending_request is RequestRouter._fulfill_next_pending_request


def test_no_private_ray_api_outside_ray_compat():
    offenders = [f"{path.relative_to(ROOT)}:{n}" for package in ("serve_app", "autoscaling")
                 for path in sorted((ROOT / package).rglob("*.py")) if path.name != "ray_compat.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if "ray" in line and any(marker in line for marker in PRIVATE_MARKERS)]
    assert offenders == []


def test_outside_a_replica_the_app_name_is_none_but_other_errors_are_not_hidden(monkeypatch):
    """`serve.get_replica_context()` (public) raises RayServeException outside a replica; only that is expected."""
    from ray import serve

    from serve_app.deployments.controller import _own_app_name

    assert _own_app_name() is None

    def broken():
        raise RuntimeError("bug")

    monkeypatch.setattr(serve, "get_replica_context", broken)
    with pytest.raises(RuntimeError, match="bug"):
        _own_app_name()
