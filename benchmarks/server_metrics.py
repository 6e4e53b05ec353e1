"""Reading a running server while a benchmark loads it: vLLM's Prometheus /metrics and nvidia-smi.

The parsers are pure; `PeakSampler` polls a reader in a thread and keeps the largest value,
`TimelineSampler` keeps every value with its time.
"""
from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

# vLLM renamed the KV usage gauge (a 0..1 fraction despite "perc"); the old name is the fallback.
KV_USAGE_METRICS = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
# prometheus_client exposes the counter `vllm:num_preemptions` with the `_total` suffix.
PREEMPTIONS_METRIC = "vllm:num_preemptions_total"


def metric_samples(text: str, name: str) -> list[float]:
    """Values of every sample of metric `name` (any labels) in Prometheus text exposition."""
    values = []
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        rest = line[len(name):]
        if rest.startswith("{"):
            rest = rest[_label_block_end(rest) + 1:]
        elif not rest.startswith((" ", "\t")):
            continue  # a longer metric name sharing this prefix
        try:
            values.append(float(rest.split()[0]))
        except (IndexError, ValueError):
            continue
    return values


def _label_block_end(text: str) -> int:
    """Index of the '}' closing the label block that `text` starts with; quotes may hold braces."""
    in_quotes = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == "}" and not in_quotes:
            return index
    return len(text)


def kv_cache_usage(text: str) -> float | None:
    """The largest engine's KV cache usage fraction, under whichever name this vLLM uses."""
    for name in KV_USAGE_METRICS:
        samples = metric_samples(text, name)
        if samples:
            return max(samples)
    return None


def preemptions_total(text: str) -> int | None:
    samples = metric_samples(text, PREEMPTIONS_METRIC)
    return int(sum(samples)) if samples else None


def first_gpu_memory_used_mib(nvidia_smi_output: str) -> float | None:
    """`nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits` prints one line per GPU."""
    for line in nvidia_smi_output.splitlines():
        try:
            return float(line.strip())
        except ValueError:
            continue
    return None


def fetch_metrics_text(metrics_url: str) -> str | None:
    try:
        return httpx.get(metrics_url, timeout=2).text
    except httpx.HTTPError:
        return None


def read_gpu_memory_used_mib() -> float | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return first_gpu_memory_used_mib(done.stdout)


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
