"""Our own successful handle calls leave Serve's access log; requests, errors and other lines stay."""
from __future__ import annotations

import logging

import pytest

from serve_app.telemetry.log_filters import RoutineCallFilter, quiet_routine_calls


def record(message: str, access_log: bool | None = True) -> logging.LogRecord:
    rec = logging.LogRecord("ray.serve", logging.INFO, __file__, 1, message, None, None)
    if access_log is not None:
        rec.serve_access_log = access_log
    return rec


@pytest.mark.parametrize(("message", "kept"), [
    ("CALL ping OK 3.1ms", False),
    ("CALL deliver OK 0.7ms", False),
    ("CALL run OK 129.7ms", False),
    ("10.0.0.1:5123 CALL run OK 12.0ms", False),  # with RAY_SERVE_LOG_CLIENT_ADDRESS
    ("CALL run ERROR 12.0ms", True),
    ("CALL run CANCELLED 3.0ms", True),
    ("POST /v1/chat/completions 200 143.6ms", True),
    ("GET /health 200 26.1ms", True),
    ("GET /v1/models 500 2.0ms", True),
])
def test_access_lines(message, kept):
    assert RoutineCallFilter().filter(record(message)) is kept


def test_other_serve_lines_stay_even_if_they_read_like_a_call():
    assert RoutineCallFilter().filter(record("CALL ping OK 1.0ms", access_log=None))
    assert RoutineCallFilter().filter(record("Started initializing replica.", access_log=False))


def test_installed_once_on_serve_logger_and_applied_before_its_handlers():
    logger = logging.getLogger("test.serve_app.log_filters")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda rec: seen.append(rec.getMessage())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    quiet_routine_calls(logger.name)
    quiet_routine_calls(logger.name)
    assert sum(isinstance(f, RoutineCallFilter) for f in logger.filters) == 1
    logger.info("CALL ping OK 1.0ms", extra={"serve_access_log": True})
    logger.info("GET /health 200 1.0ms", extra={"serve_access_log": True})
    assert seen == ["GET /health 200 1.0ms"]
