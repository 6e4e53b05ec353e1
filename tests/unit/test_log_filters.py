"""Our own successful handle calls leave Serve's access log; requests, errors and other lines stay."""
from __future__ import annotations

import logging

import pytest

from serve_app.telemetry.log_filters import RoutineCallFilter, flush_promptly, install_prompt_flush, quiet_routine_calls


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


def test_serves_buffered_log_file_gets_warnings_and_our_lines_at_once_and_keeps_buffering_the_rest():
    import logging.handlers

    written: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            written.append(record.getMessage())

    serve = logging.getLogger("test_flush.serve")
    serve.propagate = False
    serve.setLevel(logging.INFO)  # as Serve sets its logger in a replica
    buffer = logging.handlers.MemoryHandler(capacity=1000, target=Collect(), flushLevel=logging.ERROR)
    serve.addHandler(buffer)
    try:
        flush_promptly("test_flush.serve", own_prefix="test_flush.serve.ours")
        flush_promptly("test_flush.serve", own_prefix="test_flush.serve.ours")  # once is enough: not wrapped twice
        serve.info("GET /health 200")  # an access line: stays buffered
        assert written == []
        logging.getLogger("test_flush.serve.ours.replica").info("engine ready")
        assert written == ["GET /health 200", "engine ready"]
        serve.info("POST /v1/completions 200")
        logging.getLogger("test_flush.serve.other").warning("slow health check")
        assert written[-2:] == ["POST /v1/completions 200", "slow health check"]
    finally:
        serve.removeHandler(buffer)


def test_a_handler_serve_puts_in_later_is_made_prompt_by_our_next_line():
    import logging.handlers

    written: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            written.append(record.getMessage())

    serve = logging.getLogger("test_reapply.serve")
    serve.propagate = False
    serve.setLevel(logging.INFO)
    ours = logging.getLogger("test_reapply.serve.ours")
    install_prompt_flush("test_reapply.serve", own_prefix="test_reapply.serve.ours")
    # Serve reconfigures: its handlers are replaced by a fresh buffering one.
    replaced = logging.handlers.MemoryHandler(capacity=1000, target=Collect(), flushLevel=logging.ERROR)
    serve.addHandler(replaced)
    try:
        serve.info("GET /health 200")
        ours.getChild("replica").info("engine ready")
        assert written == ["GET /health 200", "engine ready"]
    finally:
        serve.removeHandler(replaced)
        ours.handlers.clear()


def test_a_serve_file_handler_closed_under_serve_gets_its_file_back_at_our_next_line(tmp_path):
    import logging.handlers

    serve = logging.getLogger("test_reopen.serve")
    serve.propagate = False
    serve.setLevel(logging.INFO)
    file_handler = logging.FileHandler(tmp_path / "replica.log")
    buffer = logging.handlers.MemoryHandler(capacity=1000, target=file_handler, flushLevel=logging.ERROR)
    serve.addHandler(buffer)
    ours = logging.getLogger("test_reopen.serve.ours")
    try:
        install_prompt_flush("test_reopen.serve", own_prefix="test_reopen.serve.ours")
        ours.info("engine starting")
        buffer.close()  # what vLLM's logging dictConfig does to every handler when an engine is created
        file_handler.close()
        serve.info("GET /health 200")  # kept in the buffer while the file is gone
        ours.info("engine ready")
        assert (tmp_path / "replica.log").read_text().splitlines() == ["engine starting", "GET /health 200",
                                                                       "engine ready"]
    finally:
        serve.removeHandler(buffer)
        ours.handlers.clear()
        file_handler.close()
