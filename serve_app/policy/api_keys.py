"""Callers identified by API key: each key has a priority ceiling, a rate limit and a fair-share weight.

Keys are kept only as SHA-256 hex digests, so a leaked config or log never holds a usable key.
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

ANONYMOUS = "anonymous"


def hash_api_key(key: str) -> str:
    """The digest stored in configs and key files for `key`."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Caller:
    """Who sent a request and what they may ask for."""

    name: str
    ceiling: str  # the highest priority class this caller may use
    rate_limit_rps: float | None = None  # None: unlimited
    burst: float = 1.0
    weight: float = 1.0  # share of its priority class against other callers queued in it

    def __post_init__(self) -> None:
        if self.rate_limit_rps is not None and not self.rate_limit_rps > 0:
            raise ValueError(f"caller {self.name!r}: rate_limit_rps must be > 0, got {self.rate_limit_rps}")
        if not self.burst >= 1:
            raise ValueError(f"caller {self.name!r}: burst must be >= 1, got {self.burst}")
        if not self.weight > 0:
            raise ValueError(f"caller {self.name!r}: weight must be > 0, got {self.weight}")


class AuthenticationFailed(ValueError):
    """No usable key: missing where one is required, or not a known key."""


class ApiKeyRegistry:
    """Maps a presented key to its `Caller`.

    With no keys configured every request is the anonymous caller (a dev setup). Once any key
    is configured, a presented key must be one of them; a request without one is anonymous
    only if `anonymous` is given.
    """

    def __init__(self, keys: Iterable[tuple[str, Caller]], anonymous: Caller | None) -> None:
        self._by_digest: dict[str, Caller] = {}
        for digest, caller in keys:
            digest = digest.lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"key {caller.name!r}: sha256 must be 64 hex digits")
            if digest in self._by_digest:
                raise ValueError(f"keys {self._by_digest[digest].name!r} and {caller.name!r} have the same digest")
            self._by_digest[digest] = caller
        self._anonymous = anonymous

    @property
    def callers(self) -> tuple[Caller, ...]:
        named = tuple(self._by_digest.values())
        return named + ((self._anonymous,) if self._anonymous else ())

    def authenticate(self, presented: str | None) -> Caller:
        if presented and self._by_digest:
            digest = hash_api_key(presented)
            for known, caller in self._by_digest.items():
                # Constant-time compare: response timing must not reveal how much of a digest matched.
                if hmac.compare_digest(known, digest):
                    return caller
            raise AuthenticationFailed("the API key is not valid")
        if self._anonymous is None:
            raise AuthenticationFailed("an API key is required: send it as 'Authorization: Bearer <key>'")
        return self._anonymous


def bearer_token(authorization: str | None) -> str | None:
    """The key from an `Authorization: Bearer <key>` header value, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
