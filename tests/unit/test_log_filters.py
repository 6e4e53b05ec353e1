"""Our own successful handle calls leave Serve's access log; requests, errors and other lines stay."""
from __future__ import annotations

import logging
import logging.handlers

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


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.written.append(record.getMessage())


@pytest.fixture()
def serve_logger(request):
    """A stand-in for Serve's logger in a replica: its own level, not propagating, a buffering handler
    (added by each test) and our loggers beneath it."""
    name = f"test_{request.node.name}.serve"
    serve = logging.getLogger(name)
    serve.propagate = False
    serve.setLevel(logging.INFO)  # as Serve sets its logger in a replica
    yield serve
    for handler in list(serve.handlers):
        serve.removeHandler(handler)
    logging.getLogger(f"{name}.ours").handlers.clear()


def buffering(target: logging.Handler) -> logging.handlers.MemoryHandler:
    return logging.handlers.MemoryHandler(capacity=1000, target=target, flushLevel=logging.ERROR)


def test_serves_buffered_log_file_gets_warnings_and_our_lines_at_once_and_keeps_buffering_the_rest(serve_logger):
    collect = Collect()
    serve_logger.addHandler(buffering(collect))
    flush_promptly(serve_logger.name, own_prefix=f"{serve_logger.name}.ours")
    flush_promptly(serve_logger.name, own_prefix=f"{serve_logger.name}.ours")  # once is enough: not wrapped twice
    serve_logger.info("GET /health 200")  # an access line: stays buffered
    assert collect.written == []
    serve_logger.getChild("ours.replica").info("engine ready")
    assert collect.written == ["GET /health 200", "engine ready"]
    serve_logger.info("POST /v1/completions 200")
    serve_logger.getChild("other").warning("slow health check")
    assert collect.written[-2:] == ["POST /v1/completions 200", "slow health check"]


def test_a_handler_serve_puts_in_later_is_made_prompt_by_our_next_line(serve_logger):
    install_prompt_flush(serve_logger.name, own_prefix=f"{serve_logger.name}.ours")
    collect = Collect()
    serve_logger.addHandler(buffering(collect))  # Serve reconfigured: a fresh buffering handler
    serve_logger.info("GET /health 200")
    serve_logger.getChild("ours.replica").info("engine ready")
    assert collect.written == ["GET /health 200", "engine ready"]


def test_a_serve_file_handler_closed_under_serve_gets_its_file_back_at_our_next_line(serve_logger, tmp_path):
    file_handler = logging.FileHandler(tmp_path / "replica.log")
    buffer = buffering(file_handler)
    serve_logger.addHandler(buffer)
    ours = serve_logger.getChild("ours")
    try:
        install_prompt_flush(serve_logger.name, own_prefix=ours.name)
        ours.info("engine starting")
        buffer.close()  # what vLLM's logging dictConfig does to every handler when an engine is created
        file_handler.close()
        serve_logger.info("GET /health 200")  # kept in the buffer while the file is gone
        ours.info("engine ready")
        assert (tmp_path / "replica.log").read_text().splitlines() == ["engine starting", "GET /health 200",
                                                                       "engine ready"]
    finally:
        file_handler.close()
