"""Each LLM replica's window shared out between the ingress replicas that route to it, as leases.

Every ingress replica routes its own requests (its own `RouterCore`), so no one process sits on
every request. A replica's memory-derived window cap is split between them by the controller:
each ingress reports how many requests of each priority class it holds (queued + running), and
capacity goes to the highest classes first, wherever they wait, then in proportion to demand
within a class (water-filling by class). So the global priority order holds across ingress replicas
to within one lease refresh. What no demand claims is split equally, and every ingress keeps at
least one slot per replica, so an idle one starts its next request at once instead of waiting a
refresh for a lease.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

Leases = dict[str, dict[str, int]]  # ingress id -> replica id -> requests it may have in flight there


def capacity_shares(total: float, demands: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """Each ingress's share of `total` slots: class by class (rank 0 first), each class's demand is
    met before the next class gets any; a class that does not fit splits the rest in proportion to
    its demand; what is left over is split equally."""
    shares = {ingress: 0.0 for ingress in demands}
    if not shares:
        return shares
    remaining = float(total)
    ranks = max((len(d) for d in demands.values()), default=0)
    for rank in range(ranks):
        wanted = {ingress: d[rank] for ingress, d in demands.items() if rank < len(d) and d[rank] > 0}
        asked = sum(wanted.values())
        if asked == 0:
            continue
        granted = min(remaining, asked)
        for ingress, count in wanted.items():
            shares[ingress] += granted * count / asked
        remaining -= granted
        if remaining <= 0:
            return shares
    for ingress in shares:
        shares[ingress] += remaining / len(shares)
    return shares


def share_windows(caps: Mapping[str, int], demands: Mapping[str, Sequence[int]]) -> Leases:
    """Per ingress, per replica, the in-flight requests it may hold there (at least 1 per replica).

    `caps`: replica id -> window cap; `demands`: ingress id -> requests held per class rank."""
    if len(demands) == 1:
        (only,) = demands
        return {only: {replica: max(1, cap) for replica, cap in caps.items()}}
    total = sum(caps.values())
    shares = capacity_shares(total, demands)
    leases: Leases = {}
    for ingress, share in shares.items():
        fraction = share / total if total else 1 / len(shares)
        leases[ingress] = {replica: max(1, math.floor(cap * fraction + 0.5)) for replica, cap in caps.items()}
    return leases
