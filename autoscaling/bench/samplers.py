"""Reading a figure of a running server over and over while a benchmark loads it, in a thread:
`PeakSampler` keeps the largest value, `TimelineSampler` keeps every value with its time."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class PollingSampler:
    """Calls `read` every `interval_s` in a background thread while in use and hands each value
    that is not None to `keep`; one more read at exit catches the final state."""

    def __init__(self, read: Callable[[], Any], interval_s: float = 0.2):
        self._read = read
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def keep(self, value: Any) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval_s)

    def _sample(self) -> None:
        value = self._read()
        if value is not None:
            self.keep(value)


class PeakSampler(PollingSampler):
    """`peak` is the largest value read (None if every read gave None)."""

    def __init__(self, read: Callable[[], float | None], interval_s: float = 0.2):
        super().__init__(read, interval_s)
        self.peak: float | None = None

    def keep(self, value: float) -> None:
        if self.peak is None or value > self.peak:
            self.peak = value


class TimelineSampler(PollingSampler):
    """`samples` holds every value read with its time.monotonic() (vLLM bench's perf_counter clock)."""

    def __init__(self, read: Callable[[], Any], interval_s: float = 2.0):
        super().__init__(read, interval_s)
        self.samples: list[tuple[float, Any]] = []

    def keep(self, value: Any) -> None:
        self.samples.append((time.monotonic(), value))
