"""Answers written together at the end of the event loop's turn, not one by one.

On loopback (and on any host where the client waits on another core) a write hands the bytes
straight to the client's socket and wakes the client if it sleeps: an interrupt to another
core, paid by the server's core. A fast-lane answer is made within the read that brought its
request, so writing it at once spaced the writes a whole request apart, and the client fell
asleep between them: every answer paid a wake-up. Queued here and written when the loop has
run every read of its turn, the first write wakes the client and the rest find it awake, as
aiohttp's handler tasks (which run after the reads) write theirs. (A fast answer that had to
wait, for latency or a slot, is written at once, as aiohttp's are.) Under load the server's
kernel time per request fell by about half (see ``docs/performance.md``); an idle server
writes on the loop's next turn, a few microseconds later.
"""

from __future__ import annotations

import asyncio


class Outbox:
    """The answers made during this turn of the loop, written in order when it ends."""

    __slots__ = ("_loop", "_queued")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queued: list[tuple[asyncio.Transport, bytes]] = []

    def send(self, transport: asyncio.Transport, data: bytes) -> None:
        if not self._queued:
            self._loop.call_soon(self._flush)
        self._queued.append((transport, data))

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        for transport, data in queued:
            if not transport.is_closing():  # the client left meanwhile: nobody to answer
                transport.write(data)
