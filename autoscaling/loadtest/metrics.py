"""Per-request records -> per-class statistics (the `ClassStats` of the load-test result schema).

Latencies as `vllm bench serve` computes them: TTFT = first token event - send; end-to-end =
last token event - send; TPOT = (e2e - TTFT) / (output_tokens - 1); ITL = gaps between token
events; percentiles, TPOT and SLO judgement from `serve_app.statistics`; throughputs over the run's
duration.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from serve_app.statistics import SloOutcome, meets_slo, slo_outcome, summary, tpot_s

Outcome = Literal["completed", "refused", "failed"]


@dataclass
class RequestRecord:
    """One request as the client saw it; times in seconds from the run's start."""

    index: int
    class_name: str
    send_s: float
    end_s: float
    outcome: Outcome
    status: int | None = None               # HTTP status; None for a transport error
    first_token_s: float | None = None
    token_times_s: list[float] = field(default_factory=list)  # one per streamed event with text or finish
    output_tokens: int | None = None        # from the server's usage
    prompt_tokens: int | None = None        # from the server's usage, else the planned length
    error: str | None = None
    error_code: str | None = None
    retry_after_s: float | None = None
    tenant: str | None = None

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.send_s

    @property
    def e2e_s(self) -> float | None:
        return None if not self.token_times_s else self.token_times_s[-1] - self.send_s

    @property
    def tpot_s(self) -> float | None:
        """None with fewer than two output tokens (no time per output token to speak of)."""
        return tpot_s(self.e2e_s, self.ttft_s, self.output_tokens or 0)

    @property
    def itls_s(self) -> list[float]:
        times = self.token_times_s
        return [b - a for a, b in zip(times, times[1:])]


@dataclass(frozen=True)
class Slo:
    ttft_s: float | None = None
    tpot_s: float | None = None

    def met_by(self, record: RequestRecord) -> bool:
        """A completed request within both targets (`serve_app.statistics.meets_slo`)."""
        return record.outcome == "completed" and meets_slo(record.ttft_s, record.tpot_s, self.ttft_s, self.tpot_s)

    def outcome_of(self, record: RequestRecord) -> SloOutcome:
        """Which targets a completed request missed (`serve_app.statistics.slo_outcome`)."""
        return slo_outcome(record.ttft_s, record.tpot_s, self.ttft_s, self.tpot_s)

    def to_dict(self) -> dict[str, float | None]:
        return {"ttft_s": self.ttft_s, "tpot_s": self.tpot_s}


def class_stats(records: Iterable[RequestRecord], duration_s: float, slos: Mapping[str, Slo],
                slo: Slo | None = None) -> dict[str, Any]:
    """`ClassStats` of `records`; each request is judged against its own class's SLO from `slos`;
    `slo` is only what the result shows (None for the overall row)."""
    records = list(records)
    done = [r for r in records if r.outcome == "completed"]
    per_s = 1.0 / duration_s if duration_s > 0 else 0.0
    met = sum(slos.get(r.class_name, Slo()).met_by(r) for r in done)
    return {
        "sent": len(records),
        "completed": len(done),
        "refused_429": sum(r.outcome == "refused" and r.status == 429 for r in records),
        "refused_503": sum(r.outcome == "refused" and r.status == 503 for r in records),
        "failed": sum(r.outcome == "failed" for r in records),
        "ttft_s": summary([r.ttft_s for r in done if r.ttft_s is not None]),
        "tpot_s": summary([r.tpot_s for r in done if r.tpot_s is not None]),
        "itl_s": summary([gap for r in done for gap in r.itls_s]),
        "e2e_s": summary([r.e2e_s for r in done if r.e2e_s is not None]),
        "request_throughput_rps": len(done) * per_s,
        "output_token_throughput_tps": sum(r.output_tokens or 0 for r in done) * per_s,
        "input_token_throughput_tps": sum(r.prompt_tokens or 0 for r in done) * per_s,
        "goodput_rps": met * per_s,
        "slo_misses": slo_misses(done, slos),
        "slo": (slo or Slo()).to_dict(),
    }


def slo_misses(done: Iterable[RequestRecord], slos: Mapping[str, Slo]) -> dict[str, int]:
    """Completed requests that missed their class's SLO, by target: the first token alone late, the
    decode alone too slow, or both. Tells which way a batch size erred: too small a batch queues
    prompts, too large a one slows every decode."""
    misses = {"ttft_only": 0, "tpot_only": 0, "both": 0}
    for record in done:
        outcome = slos.get(record.class_name, Slo()).outcome_of(record)
        if outcome != "met":
            misses[outcome] += 1
    return misses


def mean_in_flight(records: Iterable[RequestRecord], duration_s: float) -> float:
    """Time-average over [0, duration_s] of requests open at the client (sent, not yet ended)."""
    if duration_s <= 0:
        return 0.0
    open_time = sum(max(0.0, min(r.end_s, duration_s) - max(r.send_s, 0.0)) for r in records)
    return open_time / duration_s


def all_stats(records: list[RequestRecord], duration_s: float, slos: Mapping[str, Slo]) -> dict[str, Any]:
    """`{"overall": ClassStats, "classes": {name: ClassStats}}`, classes in order of first appearance;
    with `"tenants": {tenant: ClassStats}` too when the requests name their tenants."""
    names = list(dict.fromkeys(r.class_name for r in records))
    stats = {"overall": class_stats(records, duration_s, slos),
             "classes": {name: class_stats([r for r in records if r.class_name == name], duration_s, slos,
                                           slos.get(name, Slo())) for name in names}}
    tenants = list(dict.fromkeys(r.tenant for r in records if r.tenant is not None))
    if tenants:
        # Tenants are judged by their requests' classes' SLOs, as in the class rows.
        stats["tenants"] = {tenant: class_stats([r for r in records if r.tenant == tenant], duration_s, slos)
                            for tenant in tenants}
    return stats
