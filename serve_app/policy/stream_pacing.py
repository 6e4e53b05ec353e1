"""How often an ingress replica writes to each of its streams, so that all of them together stay within
the writes per second one process (and Ray Serve's HTTP proxy behind it) relays without falling behind.

Every write of a streamed response is a Ray Serve message from the ingress to the proxy and a write to
the client; that per-message work, not the tokens, is what an ingress saturates on. Under a sustained
overload on one H200 (~400 streams, ~7,300 tokens/s) the ingress's event loop lagged 100-400 ms, and every
new request's first token waited behind it. Pacing spreads a budget of writes over the streams that
are sending: each stream writes at most once per `streaming / writes_per_s` seconds, so a stream whose
tokens come slower than its share is never held, and one that comes faster gets its tokens in fewer,
larger writes. A stream is never held longer than `hold_max_tpots` of its class's TPOT target, nor for
its first token or its last part (callers write those at once).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamPacing:
    writes_per_s: float | None  # the ingress replica's budget; None: streams are paced by their class floor alone
    hold_max_tpots: float = 4.0

    def __post_init__(self) -> None:
        if self.writes_per_s is not None and self.writes_per_s <= 0:
            raise ValueError(f"writes_per_s must be positive or None, got {self.writes_per_s}")
        if self.hold_max_tpots < 0:
            raise ValueError(f"hold_max_tpots must be >= 0, got {self.hold_max_tpots}")

    def min_gap_s(self, streaming: int, tpot_slo_s: float, floor_s: float = 0.0) -> float:
        """The shortest time between two writes of one stream while `streaming` streams are sending;
        `floor_s`: the class's own `stream_coalesce_s`, which holds regardless of load."""
        if self.writes_per_s is None or streaming <= 0:
            return floor_s
        share_gap_s = streaming / self.writes_per_s
        return max(floor_s, min(share_gap_s, self.hold_max_tpots * tpot_slo_s))


def next_write_wait_s(last_write_at: float | None, min_gap_s: float, now: float) -> float:
    """How long a stream's next write waits from `now` (0: write at once)."""
    if last_write_at is None or min_gap_s <= 0:
        return 0.0
    return max(0.0, last_write_at + min_gap_s - now)
