"""The fast lane's outbox: the answers of one turn of the event loop go out together."""

from __future__ import annotations

import asyncio

from llmsim.server.outbox import Outbox


class Peer(asyncio.Transport):
    """A transport that logs what is written to it, and to whom, in one shared log."""

    def __init__(self, name: str, log: list[tuple[str, bytes]]) -> None:
        super().__init__()
        self.name, self.log, self.closed = name, log, False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.log.append((self.name, bytes(data)))

    def is_closing(self) -> bool:
        return self.closed


async def test_the_answers_of_a_turn_are_written_in_order_once_it_ends() -> None:
    log: list[tuple[str, bytes]] = []
    outbox = Outbox(asyncio.get_running_loop())
    a, b, gone = Peer("a", log), Peer("b", log), Peer("gone", log)
    for peer, data in [(a, b"1"), (b, b"2"), (gone, b"3"), (a, b"4")]:
        outbox.send(peer, data)
    gone.closed = True  # its client left before the turn ended: nobody to answer
    assert log == []  # nothing is written while the turn goes on
    await asyncio.sleep(0)
    assert log == [("a", b"1"), ("b", b"2"), ("a", b"4")]
    outbox.send(b, b"5")  # the next turn has its own write-out
    await asyncio.sleep(0)
    assert log[3:] == [("b", b"5")]
