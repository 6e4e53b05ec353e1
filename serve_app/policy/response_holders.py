"""Which LLM replica holds each stored response this ingress has relayed (OpenAI's Responses API).

vLLM keeps a stored response in the replica that made it, and a request continuing it
(`previous_response_id`) anywhere else gets a 404. An ingress that remembers where the responses it
relayed were made binds a continuation to that replica at once; for a response it did not relay (another
ingress replica's, or one forgotten here) it still asks the replicas one by one. Bounded: the oldest
entries go first (a conversation's next turn names its latest response, which is the newest here).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection

DEFAULT_CAPACITY = 50_000  # ~100 bytes an entry: a few MB per ingress replica


class ResponseHolders:
    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self._capacity = capacity
        self._holder_of: OrderedDict[str, str] = OrderedDict()
        self.known = 0  # look-ups (a continuation, a retrieval) answered from here
        self.not_known = 0  # look-ups left to the replicas (not relayed here, or their holder gone)

    def __len__(self) -> int:
        return len(self._holder_of)

    def learn(self, response_id: str, replica_id: str) -> None:
        self._holder_of[response_id] = replica_id
        self._holder_of.move_to_end(response_id)
        while len(self._holder_of) > self._capacity:
            self._holder_of.popitem(last=False)

    def holder(self, response_id: str, routable: Collection[str]) -> str | None:
        """The replica that made `response_id`, while it is among the `routable` ones; else None. A holder
        that is gone takes its responses with it (vLLM keeps them in memory): the entry is dropped."""
        replica_id = self._holder_of.get(response_id)
        if replica_id is not None and replica_id not in routable:
            del self._holder_of[response_id]
            replica_id = None
        if replica_id is None:
            self.not_known += 1
        else:
            self.known += 1
        return replica_id

    def stats(self) -> dict[str, int]:
        return {"remembered": len(self._holder_of), "holder_known": self.known, "holder_asked": self.not_known}
