"""Priority classes: named service tiers with latency SLOs and queueing deadlines.

Rank 0 is the most important class; larger ranks are served later.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class PriorityClass:
    """One service tier and the latency it promises."""

    name: str
    rank: int  # 0 = highest
    ttft_slo_s: float
    tpot_slo_s: float
    queue_deadline_s: float

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("priority class name must be non-empty")
        if self.rank < 0:
            raise ValueError(f"class {self.name!r}: rank must be >= 0, got {self.rank}")
        for field_name in ("ttft_slo_s", "tpot_slo_s", "queue_deadline_s"):
            value = getattr(self, field_name)
            if not value > 0:
                raise ValueError(f"class {self.name!r}: {field_name} must be > 0, got {value}")


class UnknownPriorityClass(ValueError):
    """Raised for a class name that is not configured; the message lists valid names."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = tuple(known)
        super().__init__(f"unknown priority class {name!r}; known classes: {', '.join(self.known)}")


class PriorityClasses:
    """Validated, immutable set of priority classes with lookup helpers."""

    def __init__(self, classes: Iterable[PriorityClass]) -> None:
        ordered = tuple(sorted(classes, key=lambda c: c.rank))
        if not ordered:
            raise ValueError("at least one priority class is required")
        names = [c.name for c in ordered]
        duplicate_names = sorted({n for n in names if names.count(n) > 1})
        if duplicate_names:
            raise ValueError(f"duplicate priority class names: {', '.join(duplicate_names)}")
        ranks = [c.rank for c in ordered]
        duplicate_ranks = sorted({r for r in ranks if ranks.count(r) > 1})
        if duplicate_ranks:
            raise ValueError(f"duplicate priority class ranks: {duplicate_ranks}")
        self._by_rank = ordered
        self._by_name = {c.name: c for c in ordered}
        self._level_by_name = {c.name: level for level, c in enumerate(ordered)}

    def get(self, name: str) -> PriorityClass:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownPriorityClass(name, self.names) from None

    @property
    def names(self) -> tuple[str, ...]:
        """Class names, highest priority first."""
        return tuple(c.name for c in self._by_rank)

    def by_rank(self) -> tuple[PriorityClass, ...]:
        """Classes ordered highest priority (rank 0) first."""
        return self._by_rank

    def level_of(self, name: str) -> int:
        """Position in rank order (0 = highest); ranks need not be contiguous, levels are."""
        return self._level_by_name[self.get(name).name]

    def name_for_vllm_priority(self, value: int) -> str:
        """vLLM's integer `priority` (lower is served first, as `vllm serve --scheduling-policy priority`
        takes it) as a class: the one at that level, 0 the highest; below 0 the highest, past the last
        level the lowest, so a client written for `vllm serve` keeps its order without knowing our names."""
        return self._by_rank[min(max(value, 0), len(self._by_rank) - 1)].name

    def tightest_ttft_slo(self, active_names: Iterable[str]) -> float | None:
        """Smallest TTFT SLO among active classes, or None when none are active."""
        slos = [self.get(n).ttft_slo_s for n in active_names]
        return min(slos) if slos else None

    def tightest_tpot_slo(self, active_names: Iterable[str]) -> float | None:
        """Smallest TPOT SLO among active classes, or None when none are active."""
        slos = [self.get(n).tpot_slo_s for n in active_names]
        return min(slos) if slos else None

    def clamp_to_ceiling(self, requested: str, ceiling: str) -> str:
        """Return `requested` unless it outranks the caller's `ceiling`, then the ceiling."""
        wanted = self.get(requested)
        allowed = self.get(ceiling)
        return allowed.name if wanted.rank < allowed.rank else wanted.name

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[PriorityClass]:
        return iter(self._by_rank)

    def __len__(self) -> int:
        return len(self._by_rank)
