"""Ray Serve's access log without our own routine calls.

Serve writes an access-log line for every handle call a replica serves: `CALL ping OK` per /health
probe, `CALL run OK` and `CALL deliver OK` per request (beside the request's own `POST ... 200`
line). Every handle call in this app is one of our components calling another, so a successful one
says nothing the HTTP line does not; failed and cancelled calls, HTTP access lines and everything
else still go through.
"""
from __future__ import annotations

import logging

SERVE_LOGGER = "ray.serve"  # Ray Serve's own logger, which writes the access log


class RoutineCallFilter(logging.Filter):
    """Drops the access-log records of handle calls that succeeded."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "serve_access_log", False):
            return True
        words = record.getMessage().split()
        # Serve's access line: "[client] METHOD ROUTE STATUS LATENCY"; handle calls have method CALL.
        return not ("CALL" in words[:2] and len(words) >= 3 and words[-2] == "OK")


def quiet_routine_calls(logger_name: str = SERVE_LOGGER) -> None:
    """Install the filter on Serve's logger in this process (once; Serve's reconfiguring replaces its
    handlers, not the logger's filters)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RoutineCallFilter) for f in logger.filters):
        logger.addFilter(RoutineCallFilter())
