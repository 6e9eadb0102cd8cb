"""Server-sent events for streamed completions.

Each chunk is pre-encoded around the token: the parts that never change within a
response (id, object, created, model) are serialised once, so a token costs one small
JSON string escape and one write.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from llmsim.api.jsonio import dumps
from llmsim.engine import RequestGroup, Sequence

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


@dataclass(frozen=True, slots=True)
class ResponseMeta:
    """What every chunk and body of one response shares."""

    id: str
    object: str
    created: int
    model: str

    def header(self) -> dict[str, Any]:
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model}


def usage(group: RequestGroup) -> dict[str, int]:
    prompt, completion = group.prompt_tokens, group.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def finish_fields(sequence: Sequence, last: bool) -> bytes:
    """``"finish_reason":...,"stop_reason":...`` for a chunk; null unless it is the last."""
    if not last:
        return b'"finish_reason":null,"stop_reason":null'
    return (
        b'"finish_reason":'
        + dumps(sequence.natural_finish)
        + b',"stop_reason":'
        + dumps(sequence.stop_reason)
    )


class StreamSink:
    """Writes a sequence's tokens as SSE chunks; subclasses shape the chunk JSON."""

    def __init__(self, response: web.StreamResponse, meta: ResponseMeta) -> None:
        self.response = response
        head = dumps(meta.header())
        self._prefix = b"data: " + head[:-1] + b',"choices":[{"index":'

    def start_chunk(self, index: int) -> bytes:
        """Sent before a choice's first token (chat announces the role)."""
        return b""

    def token_chunk(self, sequence: Sequence, text: str, last: bool) -> bytes:
        raise NotImplementedError

    def chunk(self, index: int, body: bytes) -> bytes:
        return self._prefix + str(index).encode() + b"," + body + b"}]}\n\n"

    async def tokens(self, sequence: Sequence, start: int, texts: Seq[str]) -> None:
        last = len(sequence.output) - 1
        chunks = [
            self.token_chunk(sequence, text, position == last)
            for position, text in enumerate(texts, start)
        ]
        if start == 0:
            chunks.insert(0, self.start_chunk(sequence.index))
        await self.response.write(b"".join(chunks))

    async def finished(self, sequence: Sequence) -> None:
        if not sequence.output:
            start = self.start_chunk(sequence.index)
            await self.response.write(start + self.token_chunk(sequence, "", True))


class StreamCutError(Exception):
    """Raised to cut a stream on purpose (``--stream-cut-rate``)."""


class CuttingSink:
    """Passes tokens through until ``after`` of them were written, then cuts the stream."""

    def __init__(self, inner: StreamSink, after: int) -> None:
        self._inner = inner
        self._left = after

    async def tokens(self, sequence: Sequence, start: int, texts: Seq[str]) -> None:
        if self._left <= 0:
            raise StreamCutError
        allowed = texts[: self._left]
        self._left -= len(allowed)
        await self._inner.tokens(sequence, start, allowed)
        if len(allowed) < len(texts):
            raise StreamCutError

    async def finished(self, sequence: Sequence) -> None:
        await self._inner.finished(sequence)


async def open_stream(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(headers={**SSE_HEADERS, **headers})
    await response.prepare(request)
    return response


async def close_stream(
    response: web.StreamResponse, meta: ResponseMeta, group: RequestGroup, include_usage: bool
) -> None:
    if include_usage:
        body = {**meta.header(), "choices": [], "usage": usage(group)}
        await response.write(b"data: " + dumps(body) + b"\n\n")
    await response.write(DONE)
    await response.write_eof()
