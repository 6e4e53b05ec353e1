"""Simulation outcomes -> the load-test result schema's `ClassStats`, and per-window series."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from autoscaling.simulator.cluster import RequestOutcome
from serve_app.policy.priority_classes import PriorityClasses
from serve_app.statistics import meets_slo, percentile, summary, tpot_s


def _latencies(o: RequestOutcome) -> tuple[float, float, float | None]:
    ttft = o.first_token_s - o.request.arrival_s
    e2e = o.finish_s - o.request.arrival_s
    return ttft, e2e, tpot_s(e2e, ttft, o.request.output_len)


def met_slo(o: RequestOutcome, classes: PriorityClasses) -> bool:
    if o.status != 200:
        return False
    cls = classes.get(o.request.class_name)
    ttft, _, tpot = _latencies(o)
    return meets_slo(ttft, tpot, cls.ttft_slo_s, cls.tpot_slo_s)


def class_stats(outcomes: Iterable[RequestOutcome], duration_s: float, classes: PriorityClasses,
                class_name: str | None = None) -> dict[str, Any]:
    """`ClassStats` (ITL is not simulated per token: its percentiles are null)."""
    outcomes = list(outcomes)
    done = [o for o in outcomes if o.status == 200]
    lat = [_latencies(o) for o in done]
    per_s = 1.0 / duration_s if duration_s > 0 else 0.0
    cls = classes.get(class_name) if class_name else None
    return {
        "sent": len(outcomes), "completed": len(done),
        "refused_429": sum(o.status == 429 for o in outcomes), "refused_503": sum(o.status == 503 for o in outcomes),
        "refused_by_code": dict(Counter(o.code for o in outcomes if o.code is not None)),
        "failed": sum(o.status not in (0, 200, 429, 503) for o in outcomes),
        "unfinished": sum(o.status == 0 for o in outcomes),
        "ttft_s": summary([t for t, _, _ in lat]), "tpot_s": summary([p for _, _, p in lat if p is not None]),
        "itl_s": summary([]), "e2e_s": summary([e for _, e, _ in lat]),
        "request_throughput_rps": len(done) * per_s,
        "output_token_throughput_tps": sum(o.request.output_len for o in done) * per_s,
        "input_token_throughput_tps": sum(o.request.prompt_len for o in done) * per_s,
        "goodput_rps": sum(met_slo(o, classes) for o in done) * per_s,
        "slo": {"ttft_s": cls.ttft_slo_s if cls else None, "tpot_s": cls.tpot_slo_s if cls else None},
    }


def all_stats(outcomes: list[RequestOutcome], duration_s: float, classes: PriorityClasses) -> dict[str, Any]:
    return {"overall": class_stats(outcomes, duration_s, classes),
            "classes": {name: class_stats([o for o in outcomes if o.request.class_name == name], duration_s,
                                          classes, name) for name in classes.names}}


def series(outcomes: Iterable[RequestOutcome], classes: PriorityClasses, window_s: float,
           end_s: float) -> dict[str, Any]:
    """Per class and window (by arrival): p99 TTFT of served requests, goodput, refused."""
    n = int(end_s // window_s) + 1
    ttfts: Mapping[str, list[list[float]]] = {c: [[] for _ in range(n)] for c in classes.names}
    good = {c: [0] * n for c in classes.names}
    refused = {c: [0] * n for c in classes.names}
    for o in outcomes:
        i = min(n - 1, int(o.request.arrival_s // window_s))
        name = o.request.class_name
        if o.status == 200:
            ttfts[name][i].append(_latencies(o)[0])
            good[name][i] += met_slo(o, classes)
        elif o.status in (429, 503):
            refused[name][i] += 1
    return {"window_s": window_s, "t_s": [i * window_s for i in range(n)],
            "ttft_p99_s": {c: [percentile(v, 99) for v in ttfts[c]] for c in classes.names},
            "goodput_rps": {c: [g / window_s for g in good[c]] for c in classes.names},
            "refused_rps": {c: [r / window_s for r in refused[c]] for c in classes.names}}
