"""vLLM's Prometheus /metrics read while a benchmark loads a server: parsed with prometheus_client's
own text parser, so label quoting, escapes and the exposition format's corners are its business.

The readers of one figure are pure (text in, number out); `fetch_metrics_text` is the one I/O call.
"""
from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

# vLLM renamed the KV usage gauge (a 0..1 fraction despite "perc"); the old name is the fallback.
KV_USAGE_METRICS = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
# A counter's samples carry the `_total` suffix (its family is `vllm:num_preemptions`).
PREEMPTIONS_METRIC = "vllm:num_preemptions_total"
# What `llmserve bench metrics` shows: the engine's load and cache state and its request counters.
WATCHED_METRICS = ("vllm:num_requests_running", "vllm:num_requests_waiting", *KV_USAGE_METRICS,
                   PREEMPTIONS_METRIC, "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                   "vllm:request_success_total")


def samples_by_name(text: str) -> dict[str, list[float]]:
    """Every sample's value (any labels) by sample name, e.g. `vllm:num_preemptions_total`.

    Text that stops being exposition format (a proxy's error page) ends the reading there: a
    sampler polling a busy server then records what it got rather than dying mid-benchmark."""
    values: dict[str, list[float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values.setdefault(sample.name, []).append(sample.value)
    except ValueError:
        pass
    return values


def metric_samples(text: str, name: str) -> list[float]:
    """Values of every sample named `name` (any labels); a longer name sharing the prefix is another metric."""
    return samples_by_name(text).get(name, [])


def kv_cache_usage(text: str) -> float | None:
    """The largest engine's KV cache usage fraction, under whichever name this vLLM uses."""
    samples = samples_by_name(text)
    for name in KV_USAGE_METRICS:
        if samples.get(name):
            return max(samples[name])
    return None


def preemptions_total(text: str) -> int | None:
    """Preemptions summed over engines; None when the server exports no such counter."""
    samples = metric_samples(text, PREEMPTIONS_METRIC)
    return int(sum(samples)) if samples else None


def watched_totals(text: str) -> dict[str, float]:
    """Each `WATCHED_METRICS` present in `text`, summed over its label sets (engines, models)."""
    samples = samples_by_name(text)
    return {name: sum(samples[name]) for name in WATCHED_METRICS if samples.get(name)}


def metrics_url(base_or_metrics_url: str) -> str:
    """A server's /metrics URL from its base URL (or the /metrics URL itself)."""
    url = base_or_metrics_url.rstrip("/")
    return url if url.endswith("/metrics") else f"{url}/metrics"


def fetch_metrics_text(url: str) -> str | None:
    """The exposition text at `url`; None when the server does not answer (a sample to skip)."""
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


# vLLM's own TTFT histogram: from its engine handed the request (input processing) to that request's first token
# back in the API process; `vllm serve` exports it as is, our replicas through Ray's metrics port as `ray_vllm_*`.
ENGINE_TTFT_HISTOGRAM = "vllm:time_to_first_token_seconds"
RAY_ENGINE_TTFT_HISTOGRAM = "ray_vllm_time_to_first_token_seconds"


def histogram_cumulative(text: str, name: str) -> dict[float, float]:
    """Histogram `name`'s buckets summed over its label sets (engines, replicas): upper bound (inf for +Inf) ->
    cumulative count. Empty when `text` has none."""
    buckets: dict[float, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == f"{name}_bucket":
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
    except ValueError:
        pass
    return buckets


def histogram_delta(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    """What a histogram counted between two readings (a bucket absent before counted from zero)."""
    return {bound: after[bound] - before.get(bound, 0.0) for bound in after}


def histogram_count(cumulative: dict[float, float]) -> float:
    return cumulative.get(float("inf"), 0.0)


def histogram_quantile(cumulative: dict[float, float], q: float) -> float | None:
    """The q-quantile (0-1) as Prometheus's histogram_quantile estimates it: linear within the bucket it falls in,
    the first bucket starting at 0; one past the largest finite bound is that bound. None with no observations."""
    total = histogram_count(cumulative)
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound in sorted(cumulative):
        count = cumulative[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return lower


def share_above(cumulative: dict[float, float], bound: float) -> float | None:
    """The share of observations above `bound`, one of the histogram's bucket bounds."""
    total = histogram_count(cumulative)
    if total <= 0 or bound not in cumulative:
        return None
    return 1 - cumulative[bound] / total
