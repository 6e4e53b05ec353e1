"""Our loggers' names. Under Ray Serve's `ray.serve`: in a replica, Serve's handlers stamp each line with
the time, deployment and replica and write it to the replica's own log file. Under any other name a line
reached only stderr, through logging's last-resort handler (warnings and up, unstamped), as a probe
deployment showed."""
from __future__ import annotations

import logging

SERVICE_LOGGER_PREFIX = "ray.serve.llmserve"


def service_logger(component: str) -> logging.Logger:
    return logging.getLogger(f"{SERVICE_LOGGER_PREFIX}.{component}")
