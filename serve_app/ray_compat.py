"""Every private Ray API we use, in one place, checked against the Ray version we pin.

Ray Serve keeps these outside its public surface (`ray.serve.request_router` and `ray.serve`), so
any Ray upgrade may move or change them. Importing this module compares `ray.__version__` with
`CHECKED_RAY_VERSION` and warns once when they differ; a name missing at import fails the import
with both versions in the message; a private call failing at run time is logged with its error
(repeats rate-limited), and only calls with a documented fallback return one.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import ray
from ray.serve import context as serve_context
from ray.serve.request_router import RequestRouter

from serve_app.telemetry.log_names import service_logger

CHECKED_RAY_VERSION = "2.60.0"  # pyproject.toml pins ray[serve]==2.60.0
REPEAT_WARNING_INTERVAL_S = 300.0

logger = service_logger("ray_compat")


def check_ray_version(found: str | None = None) -> bool:
    """True when the installed Ray is the one this module was checked against; else one warning."""
    found = ray.__version__ if found is None else found
    if found == CHECKED_RAY_VERSION:
        return True
    logger.warning("Ray %s is installed but serve_app/ray_compat.py was checked against Ray %s: the private "
                   "Ray APIs it wraps may have changed", found, CHECKED_RAY_VERSION)
    return False


check_ray_version()


def _missing(what: str, error: Exception) -> ImportError:
    return ImportError(f"{what} is missing in Ray {ray.__version__} (serve_app/ray_compat.py was checked against "
                       f"Ray {CHECKED_RAY_VERSION}): {type(error).__name__}: {error}")


try:
    # Ray Serve's default router (power of two choices); not exported by `ray.serve.request_router`.
    from ray.serve._private.request_router.pow_2_router import PowerOfTwoChoicesRequestRouter
except ImportError as error:
    raise _missing("ray.serve._private.request_router.pow_2_router.PowerOfTwoChoicesRequestRouter", error) from error

try:
    _base_fulfill_next_pending_request = RequestRouter._fulfill_next_pending_request
except AttributeError as error:
    raise _missing("RequestRouter._fulfill_next_pending_request", error) from error


class ChosenCallMatching:
    """Mixin (list it first): hand each chosen replica to the call it was chosen for, as the base
    `RequestRouter` does, not to the oldest pending call as `FIFOMixin` (in the power-of-two router) does."""

    _fulfill_next_pending_request = _base_fulfill_next_pending_request


class RepeatedWarnings:
    """Logs a warning text at most once per `interval_s`; repeats in between are counted into the next one,
    so a failure on every control-loop tick of an idle service is one line every few minutes."""

    MAX_TEXTS = 64  # error texts may carry ids: forget the oldest rather than grow without bound

    def __init__(self, log: logging.Logger, interval_s: float = REPEAT_WARNING_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self._log, self._interval_s, self._clock = log, interval_s, clock
        self._seen: dict[str, tuple[float, int]] = {}  # text -> (last logged at, repeats not logged since)

    def warn(self, text: str) -> bool:
        """Log `text` unless it was logged less than `interval_s` ago; True when logged."""
        now = self._clock()
        last = self._seen.pop(text, None)
        if last is not None and now - last[0] < self._interval_s:
            self._seen[text] = (last[0], last[1] + 1)
            return False
        repeats = f" (and {last[1]} times more in the last {now - last[0]:.0f} s)" if last and last[1] else ""
        self._log.warning("%s%s", text, repeats)
        self._seen[text] = (now, 0)
        while len(self._seen) > self.MAX_TEXTS:
            del self._seen[next(iter(self._seen))]
        return True


_warnings = RepeatedWarnings(logger)


def private_call_failed(api: str, error: BaseException, consequence: str) -> None:
    """Log (rate-limited) that a private Ray call failed: which, the error's type and message, and what follows."""
    _warnings.warn(f"private Ray API {api} failed on Ray {ray.__version__} (checked against {CHECKED_RAY_VERSION}): "
                   f"{type(error).__name__}: {error}; {consequence}")


async def deployment_replica_states(app_name: str, deployment_name: str) -> dict[str, str] | None:
    """Replica unique id -> Serve's state name ("RUNNING", "STOPPING", ...) from the Serve controller;
    None, logged, when it cannot say (no Serve running, controller restarting, API changed)."""
    try:
        controller = serve_context._get_global_client()._controller
        details = await controller.get_deployment_details.remote(app_name, deployment_name)
        return {replica.replica_id: str(replica.state.value) for replica in details.replicas}
    except Exception as error:  # every failure is logged; the caller chooses the fallback for None
        private_call_failed("ray.serve.context._get_global_client()._controller.get_deployment_details", error,
                            f"states of {app_name}/{deployment_name} replicas unknown")
        return None
