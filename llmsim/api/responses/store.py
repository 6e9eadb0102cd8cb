"""Stored Responses objects: ``GET /v1/responses/{id}`` and ``previous_response_id``.

Each stored response keeps only what its own turn added to the conversation (its input
messages and its answer) and the id of the response it continued. A follow-up rebuilds
the conversation by walking that chain back, so a chain of n turns holds each message once:
memory grows with the conversation, not with its square as a full copy per link would.

The store is bounded in count and in bytes (``--responses-store-max-entries``,
``--responses-store-max-size``); the least recently used responses go first, and a walk
uses every link it passes, so the ancestors of a live conversation stay while it goes on.
A response that was dropped answers as an unknown id does: 404.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from llmsim.api.http.jsonio import dumps


@dataclass(frozen=True)
class StoredResponse:
    """One stored response: its body, the messages its turn added, and its parent."""

    body: dict[str, Any]
    turn: list[dict[str, Any]]
    """Chat messages this response added: its input, then its answer (no instructions)."""
    parent: str | None
    """The ``previous_response_id`` it continued, if any."""
    size: int
    """Bytes counted against the store's limit: the JSON of body and turn."""


def stored_response(
    body: dict[str, Any], turn: list[dict[str, Any]], parent: str | None
) -> StoredResponse:
    """A :class:`StoredResponse` with its size measured as JSON."""
    return StoredResponse(body, turn, parent, len(dumps(body)) + len(dumps(turn)))


class MissingResponse(LookupError):
    """A response (or an ancestor of it) is not in the store: unknown or dropped."""

    def __init__(self, response_id: str) -> None:
        super().__init__(response_id)
        self.response_id = response_id


class ResponseStore:
    """The most recently used responses, within ``max_entries`` and ``max_bytes``."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def total_bytes(self) -> int:
        """Bytes held now, as counted against ``max_bytes``."""
        return self._bytes

    def get(self, response_id: str) -> StoredResponse | None:
        stored = self._items.get(response_id)
        if stored is not None:
            self._items.move_to_end(response_id)
        return stored

    def put(self, response_id: str, stored: StoredResponse) -> bool:
        """Keep ``stored``, dropping the least recently used beyond the limits.

        A response larger than the whole byte budget is not kept (False).
        """
        if self.max_entries < 1 or stored.size > self.max_bytes:
            return False
        old = self._items.pop(response_id, None)
        if old is not None:
            self._bytes -= old.size
        self._items[response_id] = stored
        self._bytes += stored.size
        while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= dropped.size
        return True

    def conversation(self, response_id: str) -> list[dict[str, Any]]:
        """The chat messages up to and including ``response_id``'s answer, oldest first."""
        return self.sized_conversation(response_id)[0]

    def sized_conversation(self, response_id: str) -> tuple[list[dict[str, Any]], int]:
        """The chat messages up to and including ``response_id``'s answer, oldest first,
        and the bytes its links hold (a long one is worked on off the event loop).

        Raises :class:`MissingResponse` naming the first id of the chain that is not
        stored. The walk is bounded by the number of stored responses; it uses the links
        from the oldest to ``response_id``, so the newest link is the last to be dropped.
        """
        chain: list[str] = []
        current: str | None = response_id
        while current is not None and len(chain) < len(self._items):
            stored = self._items.get(current)
            if stored is None:
                raise MissingResponse(current)
            chain.append(current)
            current = stored.parent
        if current is not None:
            raise MissingResponse(current)
        for link in reversed(chain):
            self._items.move_to_end(link)
        size = sum(self._items[link].size for link in chain)
        return [message for link in reversed(chain) for message in self._items[link].turn], size
