"""The count of requests in flight on the model endpoints, shared by every door.

vLLM's ``GET /load`` answers it (``{"server_load": N}``) and load-aware routers read it;
HTTP's model routes and gRPC's ``Generate`` and ``Embed`` calls count in the same one.
"""

from __future__ import annotations


class ServerLoad:
    """Requests in flight on the model endpoints."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __enter__(self) -> None:
        """Count one request in flight until the ``with`` block ends."""
        self.count += 1

    def __exit__(self, *exc: object) -> None:
        self.count -= 1
