"""Ray Serve's access log without our own routine calls.

Serve writes an access-log line for every handle call a replica serves: `CALL ping OK` per /health
probe, `CALL run OK` and `CALL deliver OK` per request (beside the request's own `POST ... 200`
line). Every handle call in this app is one of our components calling another, so a successful one
says nothing the HTTP line does not; failed and cancelled calls, HTTP access lines and everything
else still go through.

Serve also buffers a replica's log file (up to 1,000 records in its throughput-optimized mode, flushed
only when full or on an error), so a warning could sit unwritten for hours, and be lost with a process
that is killed: the very lines that explain why it was. `flush_promptly` writes warnings and our own
lines at once; Serve's access lines stay buffered. Each of our lines re-applies it first, for handlers
replaced or closed since (Serve reconfigures on a logging-config change; vLLM's `dictConfig` closes them).
"""
from __future__ import annotations

import logging
import logging.handlers
import weakref

from serve_app.telemetry.log_names import SERVICE_LOGGER_PREFIX

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


class _ReapplyPromptFlush(logging.Handler):
    """On our own logger: before a line of ours reaches Serve's handlers, make sure they write it at once."""

    def __init__(self, serve_logger: str, own_prefix: str):
        super().__init__()
        self._serve_logger, self._own_prefix = serve_logger, own_prefix

    def emit(self, record: logging.LogRecord) -> None:
        flush_promptly(self._serve_logger, self._own_prefix)


def install_prompt_flush(serve_logger: str = SERVE_LOGGER, own_prefix: str = SERVICE_LOGGER_PREFIX) -> None:
    """`flush_promptly` now and again before each of our lines (once per process)."""
    ours = logging.getLogger(own_prefix)
    if not any(isinstance(h, _ReapplyPromptFlush) for h in ours.handlers):
        ours.addHandler(_ReapplyPromptFlush(serve_logger, own_prefix))
    flush_promptly(serve_logger, own_prefix)


# Serve's buffering handler -> the file handler it writes to, to give it back when something closed it.
_file_targets: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def flush_promptly(logger_name: str = SERVE_LOGGER, own_prefix: str = SERVICE_LOGGER_PREFIX) -> None:
    """Make the buffering handlers on Serve's logger in this process write a record at once when it is a
    warning or worse, or one of ours (`own_prefix`: lifecycle lines, a few per process, never one per request).

    Also gives such a handler back its file when it was closed under Serve: vLLM applies its logging
    `dictConfig` when an engine is created, and `dictConfig` closes every handler in the process; a closed
    `MemoryHandler` drops its target, and the replica's log file got nothing more from then on (seen on the
    CPU build, 0.32: the file stopped at the engine's start while stderr went on)."""
    for handler in logging.getLogger(logger_name).handlers:
        if not isinstance(handler, logging.handlers.MemoryHandler):
            continue
        if handler.target is not None:
            _file_targets[handler] = handler.target
        elif handler in _file_targets:
            handler.target = _file_targets[handler]  # a closed FileHandler reopens its file on the next write
        if not getattr(handler, "_llmserve_prompt", False):
            buffered = handler.shouldFlush

            def should_flush(record: logging.LogRecord, buffered=buffered) -> bool:
                return record.levelno >= logging.WARNING or record.name.startswith(own_prefix) or buffered(record)

            handler.shouldFlush = should_flush
            handler._llmserve_prompt = True
