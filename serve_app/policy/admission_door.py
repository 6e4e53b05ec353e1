"""The ingress's memory of the router's recent overload refusals: 429s decided at the door.

Under a burst far beyond capacity most requests are refused, and each refusal used to cost a Ray
round trip to the router on a machine already saturated by the burst (a median of 7 s in a 10x
burst on CPU). Once the router has refused a class for overload, the door refuses that class and
every lower one itself, before tokenizing or calling anyone. When the refusal is `hold_s` old, the
next request of such a class is still refused at the door, and the ingress asks the router in the
background whether it would admit each class now (`needs_query` / `query_answered`); a class the
router would admit opens, one it would refuse stays closed another `hold_s`. No client request
waits for that question; an unanswered one (`hold_s` later) opens the door, so a router that went
quiet never keeps it shut. A request of a class the router admitted opens it for that class and
the classes above it.

The router still counts every refusal: the ingress reports door refusals back in batches
(`take_refusal_counts`), so arrivals and capacity refusals seen by autoscaling are unchanged.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from serve_app.policy.priority_classes import PriorityClasses

DOOR_HOLD_S = 0.5


@dataclass(frozen=True)
class DoorRefusal:
    class_name: str  # the class whose refusal by the router closed the door
    message: str
    retry_after_s: int


class AdmissionDoor:
    def __init__(self, classes: PriorityClasses, hold_s: float = DOOR_HOLD_S) -> None:
        if not hold_s > 0:
            raise ValueError(f"hold_s must be > 0, got {hold_s}")
        self._classes = classes
        self._hold_s = hold_s
        # level -> (closed until, the refusal that closed it)
        self._closed: dict[int, tuple[float, DoorRefusal]] = {}
        self._refused_here: Counter[str] = Counter()
        self._query_due = False
        self._query_sent_at: float | None = None

    def router_refused(self, class_name: str, message: str, retry_after_s: int, now: float) -> None:
        """The router refused a `class_name` request for overload (predicted wait past its deadline)."""
        level = self._classes.level_of(class_name)
        self._closed[level] = (now + self._hold_s, DoorRefusal(class_name, message, retry_after_s))

    def router_admitted(self, class_name: str) -> None:
        """The router admitted a `class_name` request: it and the classes above it are let in again."""
        level = self._classes.level_of(class_name)
        for closed_level in [lv for lv in self._closed if lv <= level]:
            del self._closed[closed_level]

    def check(self, class_name: str, now: float, count_as: str | None = None) -> DoorRefusal | None:
        """The refusal to answer at once, or None to send the request to the router; a refusal is
        counted under `count_as` if given (the class the request would have had)."""
        level = self._classes.level_of(class_name)
        closing = [lv for lv in self._closed if lv <= level]
        if not closing:
            return None
        nearest = max(closing)  # the closure of the class nearest this one says the most about it
        until, refusal = self._closed[nearest]
        if until <= now:
            if self._query_sent_at is not None and now - self._query_sent_at >= self._hold_s:
                self.query_failed(now)  # nobody answered: open rather than guess
                return self.check(class_name, now, count_as)
            if self._query_sent_at is None:
                self._query_due = True
        self._refused_here[count_as or class_name] += 1
        return refusal

    def needs_query(self, now: float) -> bool:
        """True once when the router should be asked about the classes whose hold has run out."""
        if not self._query_due or self._query_sent_at is not None:
            return False
        self._query_due, self._query_sent_at = False, now
        return True

    def query_answered(self, refusals: Mapping[str, tuple[str, int] | None], now: float) -> None:
        """The router's answer per class: (message, retry_after_s) if it would refuse one now, else None."""
        self._query_sent_at = None
        for class_name, refusal in refusals.items():
            if refusal is None:
                self._closed.pop(self._classes.level_of(class_name), None)
            elif self._classes.level_of(class_name) in self._closed:
                self.router_refused(class_name, *refusal, now)

    def query_failed(self, now: float) -> None:
        """The question went unanswered: classes whose hold ran out open."""
        self._query_sent_at = None
        self._closed = {lv: (until, refusal) for lv, (until, refusal) in self._closed.items() if until > now}

    def take_refusal_counts(self) -> dict[str, int]:
        """Door refusals per class since the last call (for the router's counters)."""
        counts, self._refused_here = dict(self._refused_here), Counter()
        return counts
