"""Per-key token-bucket rate limiting (e.g. per API key).

Buckets start full so a new key may burst; idle full buckets can be pruned to bound memory.
"""

from __future__ import annotations

from dataclasses import dataclass

# Refill accumulates many small float increments; without slack, a request arriving exactly
# on schedule can be refused for a 1e-16 shortfall.
_TOKEN_EPSILON = 1e-9


@dataclass
class _Bucket:
    tokens: float
    updated_s: float


class RateLimiter:
    """Token bucket per key: refills at `rate_per_s` up to `burst` tokens."""

    def __init__(self, rate_per_s: float, burst: float) -> None:
        if not rate_per_s > 0:
            raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
        if not burst >= 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self._rate_per_s = rate_per_s
        self._burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def try_acquire(self, key: str, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens: 0.0 if allowed, else seconds until it would be (nothing is taken)."""
        if not 0 < cost <= self._burst:
            raise ValueError(f"cost must be in (0, burst={self._burst}], got {cost}")
        bucket = self._refilled(key, now)
        if bucket.tokens >= cost - _TOKEN_EPSILON:
            bucket.tokens = max(0.0, bucket.tokens - cost)
            return 0.0
        return (cost - bucket.tokens) / self._rate_per_s

    def prune(self, now: float) -> int:
        """Forget keys whose bucket has refilled completely; returns how many were dropped."""
        full_level = self._burst - _TOKEN_EPSILON
        full_keys = [key for key in self._buckets if self._refilled(key, now).tokens >= full_level]
        for key in full_keys:
            del self._buckets[key]
        return len(full_keys)

    def __len__(self) -> int:
        return len(self._buckets)

    def _refilled(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
            return bucket
        # A clock step backwards must not drain or overfill the bucket.
        elapsed_s = max(0.0, now - bucket.updated_s)
        bucket.tokens = min(self._burst, bucket.tokens + elapsed_s * self._rate_per_s)
        bucket.updated_s = max(bucket.updated_s, now)
        return bucket
