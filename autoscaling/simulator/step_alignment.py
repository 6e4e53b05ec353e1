"""What a delay between the client and the engine does to each request's TTFT, request by request.

An engine takes new requests between steps. Delay every request by the same amount and the engine sees the same
arrivals shifted: the same schedule, each request paying exactly the delay. Delay them by different amounts
(jitter: a busy event loop, a slow hop) and a request whose delay carries it past a step boundary that its
neighbours' schedule set waits for the next step: it pays a whole step more (a decode step of a few ms, another
request's prefill of tens), while one that now makes a boundary it had missed pays less. Replaying one recorded
arrival sequence through the simulated engine (`calibration.open_loop`) with and without the delays gives the
request-by-request difference that `request_path_h200.py summarize` measures between our app and `vllm serve`
(`paired_ttft_difference_ms`), for the engine's share alone.
"""
from __future__ import annotations

from collections.abc import Sequence

from autoscaling.simulator.calibration import open_loop
from autoscaling.simulator.replica import EngineConfig
from autoscaling.simulator.step_model import StepModel
from serve_app.statistics import percentile

# (seconds from the run's start when the client sent it, prompt tokens, output tokens)
Arrival = tuple[float, int, int]
PERCENTILES = (10, 50, 90, 99)


def delayed_ttft_differences(model: StepModel, engine: EngineConfig, arrivals: Sequence[Arrival],
                             delays_s: Sequence[float]) -> list[float]:
    """Per arrival, in order: its TTFT (from the client's send) when it reaches the engine its `delays_s` entry
    later, minus its TTFT when every arrival reaches the engine at once."""
    if len(delays_s) != len(arrivals):
        raise ValueError(f"{len(delays_s)} delays for {len(arrivals)} arrivals")
    on_time, delayed = _ttfts(model, engine, arrivals, [0.0] * len(arrivals)), _ttfts(model, engine, arrivals, delays_s)
    return [delayed[i] - on_time[i] for i in range(len(arrivals))]


def difference_percentiles_ms(differences: Sequence[float]) -> dict[str, float]:
    return {f"p{p}": round(percentile(differences, p) * 1000, 2) for p in PERCENTILES}


def _ttfts(model: StepModel, engine: EngineConfig, arrivals: Sequence[Arrival],
           delays_s: Sequence[float]) -> dict[int, float]:
    done = open_loop(model, engine, [(sent + delay, prompt, output, 0, i)
                                     for i, ((sent, prompt, output), delay) in enumerate(zip(arrivals, delays_s))])
    return {request.tag: request.first_token_s - arrivals[request.tag][0] for request in done}
