"""The ingress's memory of the router's overload refusals: 429s decided at the door.

Under a burst far beyond capacity most requests are refused, and each refusal used to cost a Ray
round trip to the router on a machine already saturated by the burst (a median of 7 s in a 10x
burst on CPU). Once the router has refused a class for overload, the door *closes* that class and
every lower one: their requests are refused at once, before the body is read or anything is
tokenized. A closure holds `hold_s`; after that the next request (still refused) makes the ingress
ask the router in the background how many more requests of each class it would admit now
(`needs_query` / `query_answered`). That many pass the door as *credits*; the rest are refused at
the door until the closure's next question. So a burst reaches the router only as far as it has
room, and no client waits for the question. An unanswered question (after another `hold_s`)
opens the door: a router gone quiet never keeps it shut. A request of a class the router admitted
and served opens the door for that class and the classes above it. The door does not know callers, so
it closes only when the router would refuse even a caller with nothing queued: a caller over its fair
share of a class is refused by the router alone, and the others still pass.

The router still counts every refusal: the ingress reports door refusals back in batches
(`take_refusal_counts`), so arrivals and capacity refusals seen by autoscaling are unchanged.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from serve_app.policy.admission import AdmissionPreview
from serve_app.policy.priority_classes import PriorityClasses

DOOR_HOLD_S = 0.5


@dataclass(frozen=True)
class DoorRefusal:
    class_name: str  # the class whose refusal by the router closed the door
    message: str
    retry_after_s: int


@dataclass
class _Closure:
    until: float
    refusal: DoorRefusal
    credits: int = 0  # requests the router said it would still admit; they pass the door


class AdmissionDoor:
    def __init__(self, classes: PriorityClasses, hold_s: float = DOOR_HOLD_S) -> None:
        if not hold_s > 0:
            raise ValueError(f"hold_s must be > 0, got {hold_s}")
        self._classes = classes
        self._hold_s = hold_s
        self._closed: dict[int, _Closure] = {}  # by class level (0 = top)
        self._refused_here: Counter[str] = Counter()
        self._query_due = False
        self._query_sent_at: float | None = None

    def router_refused(self, class_name: str, message: str, retry_after_s: int, now: float,
                       room_for_new_caller: int = 0) -> None:
        """The router refused a `class_name` request for overload (predicted wait past its deadline).
        `room_for_new_caller`: what the router would still admit from a caller with nothing queued (its
        preview's room); the door closes only when that is 0, since a caller refused for being over its
        fair share of the class says nothing about the others."""
        if room_for_new_caller > 0:
            return
        self._closed[self._classes.level_of(class_name)] = _Closure(
            now + self._hold_s, DoorRefusal(class_name, message, retry_after_s))

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
        closure = self._closed[max(closing)]  # the closure nearest this class says the most about it
        if closure.until <= now:
            if self._query_sent_at is not None and now - self._query_sent_at >= self._hold_s:
                self.query_failed(now)  # nobody answered: open rather than guess
                return self.check(class_name, now, count_as)
            if self._query_sent_at is None:
                self._query_due = True
        if closure.credits > 0:
            closure.credits -= 1
            return None
        self._refused_here[count_as or class_name] += 1
        return closure.refusal

    def needs_query(self, now: float) -> bool:
        """True once when the router should be asked about the classes whose hold has run out."""
        if not self._query_due or self._query_sent_at is not None:
            return False
        self._query_due, self._query_sent_at = False, now
        return True

    def query_answered(self, previews: Mapping[str, AdmissionPreview | None], now: float) -> None:
        """The router's answer: per class, how many more it would admit now (None: no limit)."""
        self._query_sent_at = None
        for class_name, preview in previews.items():
            level = self._classes.level_of(class_name)
            if preview is None:
                self._closed.pop(level, None)
            elif level in self._closed:
                self._closed[level] = _Closure(now + self._hold_s,
                                               DoorRefusal(class_name, preview.message, preview.retry_after_s),
                                               credits=preview.room)

    def query_failed(self, now: float) -> None:
        """The question went unanswered: classes whose hold ran out open."""
        self._query_sent_at = None
        self._closed = {lv: closure for lv, closure in self._closed.items() if closure.until > now}

    def take_refusal_counts(self) -> dict[str, int]:
        """Door refusals per class since the last call (for the router's counters)."""
        counts, self._refused_here = dict(self._refused_here), Counter()
        return counts
