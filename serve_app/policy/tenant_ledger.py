"""Per-caller (tenant) counters inside each priority class: what fair shares did for each API key.

Bounded: tenants are the configured keys and `anonymous`; requests are held only while queued or running.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TenantCounters:
    """One caller's requests in one class."""

    admitted: int = 0
    refused_overload: int = 0
    served: int = 0


class TenantLedger:
    def __init__(self) -> None:
        self._counters: dict[str, dict[str, TenantCounters]] = {}
        self._tenant_of: dict[str, str] = {}  # request id -> caller name, while queued or running

    def refused_overload(self, tenant: str, class_name: str) -> None:
        self._of(tenant, class_name).refused_overload += 1

    def admitted(self, request_id: str, tenant: str, class_name: str) -> None:
        self._tenant_of[request_id] = tenant
        self._of(tenant, class_name).admitted += 1

    def ended(self, request_id: str, class_name: str, *, served: bool) -> None:
        """A dispatched request finished (served or failed)."""
        tenant = self._tenant_of.pop(request_id, None)
        if served and tenant is not None:
            self._of(tenant, class_name).served += 1

    def dropped(self, request_id: str) -> None:
        """The request left the router unserved (expired, shed or cancelled)."""
        self._tenant_of.pop(request_id, None)

    def stats(self, queued: dict[str, dict[str, int]]) -> dict[str, dict[str, dict[str, int]]]:
        """{caller: {class: {admitted, refused_overload, served, queued}}} for callers seen; `queued` is the
        queue's depth per tenant and class."""
        return {tenant: {class_name: {"admitted": c.admitted, "refused_overload": c.refused_overload,
                                      "served": c.served, "queued": queued.get(tenant, {}).get(class_name, 0)}
                         for class_name, c in by_class.items()}
                for tenant, by_class in self._counters.items()}

    def _of(self, tenant: str, class_name: str) -> TenantCounters:
        return self._counters.setdefault(tenant, {}).setdefault(class_name, TenantCounters())
