"""A token sink that hands released ids to the gRPC handler through a queue.

The engine's pacer calls :meth:`ChunkSink.tokens` from its timer and must not block, so
each batch becomes a message on a queue the handler drains as fast as the client reads;
when the queue backs up, the engine waits (:meth:`drain`) instead of buffering without end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence as Seq

from llmsim.api.grpc import convert
from llmsim.api.grpc.generated import vllm_engine_pb2 as pb
from llmsim.engine import RequestGroup, Sequence
from llmsim.engine.tokenizer import Tokenizer
from llmsim.service.generation import output_ids

HIGH_WATER = 64
"""Messages queued before the engine waits for the client to read."""


class ChunkSink:
    def __init__(self, group: RequestGroup) -> None:
        self._prompt_tokens = group.prompt_tokens
        self._tokenizer: Tokenizer = group.engine.tokenizer
        self._queue: asyncio.Queue[pb.GenerateResponse | None] = asyncio.Queue()
        self._room = asyncio.Event()
        self._room.set()
        self._sent: dict[int, list[int]] = {}
        """Each sample's ids streamed so far, so the final message need not look them up again."""

    def tokens(self, sequence: Sequence, start: int, texts: Seq[str]) -> bool:
        end = start + len(texts)
        ids = output_ids(sequence, self._tokenizer, start, end)
        self._sent.setdefault(sequence.index, []).extend(ids)
        self._queue.put_nowait(convert.chunk(self._prompt_tokens, sequence, ids, end))
        if self._queue.qsize() >= HIGH_WATER:
            self._room.clear()
            return True
        return False

    def sent_ids(self, sequence: Sequence) -> list[int]:
        """The ids of every token of ``sequence`` that went out."""
        sent = self._sent.get(sequence.index, [])
        if len(sent) == sequence.generated:
            return sent
        return output_ids(sequence, self._tokenizer)

    def finished(self, sequence: Sequence) -> None:
        """The handler sends the final message itself, once every sample is done."""

    async def drain(self) -> None:
        await self._room.wait()

    def close(self) -> None:
        """No more chunks: the handler's :meth:`next` returns None after the queued ones."""
        self._queue.put_nowait(None)

    async def next(self) -> pb.GenerateResponse | None:
        item = await self._queue.get()
        if self._queue.qsize() < HIGH_WATER // 2:
            self._room.set()
        return item
