"""Server-sent events for streamed completions.

Each chunk is pre-encoded around the token: the parts that never change within a
response (id, object, created, model) are serialised once, so a token costs one small
JSON string escape and one write.

The engine releases tokens from a timer callback, so token writes are synchronous: they
go straight to the connection's transport (framed as HTTP/1.1 chunks when the response
is chunked), after aiohttp has sent the headers. A client that stops reading backs the
stream up; the engine then waits for :meth:`StreamSink.drain` before writing more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

from llmsim.api.http.errors import error_body
from llmsim.api.http.jsonio import dumps
from llmsim.api.openai.logprobs import OutputPlan
from llmsim.api.openai.stream_logprobs import StreamLogprobs
from llmsim.engine import RequestGroup, Sequence
from llmsim.engine.pacer import MAX_BATCH, RelaySink, TokenSink

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


@dataclass(slots=True)
class ResponseMeta:
    """What every chunk and body of one response shares (one per request, so not frozen:
    a frozen ``__init__`` sets each field through ``object.__setattr__``)."""

    id: str
    object: str
    created: int
    model: str
    plan: OutputPlan | None = None
    """Logprobs, echo and prompt logprobs the request asked for; None for plain text."""
    reasoning_shown: bool = True
    """With a reasoning parser: whether the answer shows the thought (``include_reasoning``)."""
    role: str = "assistant"
    """The chat answer's role (``--response-role``)."""
    continuous_usage: bool = False
    """Every chunk carries its choice's usage so far (``stream_options.continuous_usage_stats``
    with ``include_usage``)."""
    fingerprint: str | None = None
    """vLLM's ``system_fingerprint`` (chat and completions only): in the body, and on a
    stream's last chunks (the usage chunk when there is one)."""
    metrics: Callable[[Sequence], dict[str, Any]] | None = None
    """What makes the usage chunk's per-request ``metrics`` (one choice, when asked)."""
    stream_interval: int = 1
    """Tokens per chunk (``--stream-interval``, or the request's ``stream_interval``): above
    1 the engine hands the sink each chunk's tokens at once (:mod:`llmsim.engine.stream_interval`)."""

    def header(self) -> dict[str, Any]:
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model}


def usage(group: RequestGroup) -> dict[str, Any]:
    prompt, completion = group.prompt_tokens, group.completion_tokens
    body: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if group.engine.settings.enable_prompt_tokens_details:
        cached = group.cached_tokens
        if cached:  # vLLM adds the details only when some prompt tokens were cached
            body["prompt_tokens_details"] = {"cached_tokens": cached}
    return body


def fingerprint_tail(fingerprint: str) -> bytes:
    """How a chunk that carries the ``system_fingerprint`` ends (made once per server)."""
    return b'}],"system_fingerprint":' + dumps(fingerprint) + b"}\n\n"


NOT_FINISHED = b'"finish_reason":null,"stop_reason":null'
"""The finish fields of every chunk but a choice's last."""


def finish_fields(sequence: Sequence, last: bool) -> bytes:
    """``"finish_reason":...,"stop_reason":...`` for a chunk; null unless it is the last."""
    if not last:
        return NOT_FINISHED
    return (
        b'"finish_reason":'
        + dumps(sequence.api_finish_reason)
        + b',"stop_reason":'
        + dumps(sequence.stop_reason)
    )


LOGPROB_TOKENS_PER_TICK = 64
"""Tokens with logprobs written per engine tick over all choices of a stream: a few ms."""
HIGH_WATER = 256 * 1024
"""Bytes queued on a connection beyond which a stream waits for the client to read."""


class StreamSink:
    """Writes a sequence's tokens as SSE chunks; subclasses shape the chunk JSON."""

    def __init__(
        self, request: web.BaseRequest, response: web.StreamResponse, meta: ResponseMeta
    ) -> None:
        """``response`` must be prepared: from then on tokens go to the connection."""
        self.request = request
        self.response = response
        head = dumps(meta.header())
        self._prefix = b"data: " + head[:-1] + b',"choices":[{"index":'
        self._heads: dict[int, bytes] = {}
        self._parts: dict[int, tuple[bytes, bytes, bytes] | bool] = {}
        """Per choice: what :meth:`_plain_chunks` joins plain tokens with (False: no join)."""
        self.sent = 0
        """Bytes written to the connection past aiohttp (``body_length`` misses them)."""
        self._chunked = response.chunked
        self._connection = request.transport
        self.logprobs = StreamLogprobs(meta.plan) if meta.plan is not None else None
        """Logprobs and echo state; None on the plain-text path."""
        self.max_batch = MAX_BATCH
        """Most tokens of one sequence the engine releases to this sink at once."""
        self.continuous_usage = meta.continuous_usage
        self.grouped = meta.stream_interval > 1
        """Each call of :meth:`tokens` is one chunk, however many tokens it brings."""
        self._last_tail: bytes | None = None
        """What ends a choice's last chunk in place of ``}]}`` (the fingerprint), if any."""

    def stamp_last_chunks(self, tail: bytes) -> None:
        """Each choice's last chunk ends with ``tail`` (:func:`fingerprint_tail`), as vLLM
        ends a stream that sends no usage chunk."""
        self._last_tail = tail

    def share_batches(self, choices: int) -> None:
        """With logprobs, keep the tokens written per engine tick to about
        :data:`LOGPROB_TOKENS_PER_TICK` over all ``choices`` (each costs tens of µs)."""
        if self.logprobs is not None and self.logprobs.plan.logprobs is not None:
            self.max_batch = max(1, min(MAX_BATCH, LOGPROB_TOKENS_PER_TICK // choices))

    def start_chunk(self, index: int) -> bytes:
        """Sent before a choice's first token (chat announces the role)."""
        return b""

    def token_chunk(
        self, sequence: Sequence, text: str, last: bool, pieces: Seq[str] | None = None
    ) -> bytes:
        """The chunk of token ``text``; ``pieces``: the tokens it joins, when several (a
        stream-interval group), for their logprobs."""
        raise NotImplementedError

    def chunk(self, index: int, body: bytes) -> bytes:
        return self.head(index) + body + b"}]}\n\n"

    def head(self, index: int) -> bytes:
        """``data: {...,"choices":[{"index":N,`` for choice ``index``, made once per choice."""
        head = self._heads.get(index)
        if head is None:
            head = self._heads[index] = self._prefix + str(index).encode() + b","
        return head

    def tool_token_chunk(
        self,
        sequence: Sequence,
        position: int,
        text: str,
        last: bool,
        pieces: Seq[str] | None = None,
    ) -> bytes:
        """A token of a sequence with tool calls or a thought (only chat streams them apart)."""
        return self.token_chunk(sequence, text, last, pieces)

    def group_chunk(self, sequence: Sequence, start: int, texts: Seq[str], last: bool) -> bytes:
        """One chunk for the tokens ``texts`` from ``start`` on: a stream-interval group,
        all of one kind (thought, text, or one tool call's arguments)."""
        if sequence.tool_calls or sequence.reasoning_end:
            return self.tool_token_chunk(sequence, start, "".join(texts), last, texts)
        return self.token_chunk(sequence, "".join(texts), last, texts)

    def plain_token_parts(self, index: int) -> tuple[bytes, bytes] | None:
        """``(before, after)`` such that a plain token's chunk that is not its choice's last
        is ``before + dumps(text) + after``; None where chunks need more than the text
        (logprobs, or a sink that shapes them otherwise)."""
        return None

    def tokens(self, sequence: Sequence, start: int, texts: Seq[str]) -> bool:
        if self.grouped and len(texts) > 1:
            return self._group(sequence, start, texts)
        last = len(sequence.output) - 1
        if sequence.tool_calls or sequence.reasoning_end:
            tool_chunk = self.tool_token_chunk
            chunks = [
                tool_chunk(sequence, position, text, position == last)
                for position, text in enumerate(texts, start)
            ]
        else:
            chunks = self._plain_chunks(sequence, start, texts, last)
        return self._send(sequence, start, chunks, start + len(texts), len(texts))

    def _group(self, sequence: Sequence, start: int, texts: Seq[str]) -> bool:
        """Write the tokens of one stream-interval group as one chunk."""
        end = start + len(texts)
        chunks = [self.group_chunk(sequence, start, texts, end >= len(sequence.output))]
        return self._send(sequence, start, chunks, end, 1)

    def _send(
        self, sequence: Sequence, start: int, chunks: list[bytes], end: int, carriers: int
    ) -> bool:
        """Write the chunks of the tokens ``start`` to ``end``: the choice's opening chunk
        first when it starts, its last chunk stamped when it ends, and with continuous usage
        each of the ``carriers`` (one chunk per token, or one for them all) counting up to
        its last token."""
        if start == 0:
            chunks.insert(0, self.start_chunk(sequence.index))
        if self._last_tail is not None and end >= len(sequence.output):
            self._stamp(chunks)
        if self.continuous_usage:
            counts = range(end - carriers + 1, end + 1) if carriers > 1 else (end,)
            opened = (0, *counts) if start == 0 else counts
            return self.write(self._with_usage(sequence, chunks, opened))
        return self.write(b"".join(chunks))

    def _plain_chunks(
        self, sequence: Sequence, start: int, texts: Seq[str], last: int
    ) -> list[bytes]:
        """Plain tokens' chunks: those that are not the choice's last are joined around
        their encoded texts in C (the engine hands over up to 64 at once)."""
        index = sequence.index
        parts = self._parts.get(index)
        if parts is None:
            parts = self._parts[index] = self._token_parts(index)
        if parts is False:
            token_chunk = self.token_chunk
            return [
                token_chunk(sequence, text, position == last)
                for position, text in enumerate(texts, start)
            ]
        before, separator, after = cast(tuple[bytes, bytes, bytes], parts)
        ends = start + len(texts) > last
        middle = texts[:-1] if ends else texts
        chunks = [before + separator.join(map(dumps, middle)) + after] if middle else []
        if ends:
            chunks.append(self.token_chunk(sequence, texts[-1], True))
        return chunks

    def _token_parts(self, index: int) -> tuple[bytes, bytes, bytes] | bool:
        """:meth:`plain_token_parts` with the separator between two chunks; False if none."""
        plain = self.logprobs is None and not self.continuous_usage
        parts = self.plain_token_parts(index) if plain else None
        if parts is None:
            return False
        before, after = parts
        return before, after + before, after

    def end_chunk(self, sequence: Sequence) -> bytes:
        """A choice's last chunk when its last token went out unmarked (cut short by a
        pause's abort): no text, the finish reason."""
        raise NotImplementedError

    def finished(self, sequence: Sequence) -> None:
        if not sequence.output:
            chunks = [self.start_chunk(sequence.index), self.token_chunk(sequence, "", True)]
            counts = [0, 0]
        elif sequence.cut_short:
            chunks, counts = [self.end_chunk(sequence)], [sequence.generated]
        else:
            return
        if self._last_tail is not None:
            self._stamp(chunks)
        if self.continuous_usage:
            self.write(self._with_usage(sequence, chunks, counts))
        else:
            self.write(b"".join(chunks))

    def _stamp(self, chunks: list[bytes]) -> None:
        """The last of ``chunks`` (a choice's last) ends with :attr:`_last_tail`."""
        if chunks and chunks[-1].endswith(b"}]}\n\n"):
            chunks[-1] = chunks[-1][:-5] + cast(bytes, self._last_tail)

    def _with_usage(self, sequence: Sequence, chunks: list[bytes], counts: Iterable[int]) -> bytes:
        """``chunks`` joined, each carrying its choice's usage so far as vLLM streams it with
        ``continuous_usage_stats``: the prompt, and the tokens up to its own (``counts``)."""
        prompt = sequence.prompt_tokens
        stamped = []
        for chunk, count in zip(chunks, counts, strict=True):
            if chunk:  # a hidden thought's token sends nothing
                usage = b'"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d' % (
                    prompt,
                    count,
                    prompt + count,
                )
                stamped.append(chunk[:-3] + b',"usage":{' + usage + b"}}\n\n")
        return b"".join(stamped)

    def write(self, data: bytes) -> bool:
        """Write now; True if the connection is backed up."""
        transport = self._transport()
        if self._chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        transport.write(data)
        self.sent += len(data)
        return transport.get_write_buffer_size() > HIGH_WATER

    async def close(self, meta: ResponseMeta, group: RequestGroup, include_usage: bool) -> None:
        """End the stream once every sequence finished (the usage chunk and ``[DONE]``)."""
        await close_stream(self.response, meta, group, include_usage)

    def error_events(self, message: str) -> bytes:
        """What ends a stream that failed after its headers: vLLM's error chunk, then ``[DONE]``."""
        return b"data: " + error_body(500, message) + b"\n\n" + DONE

    async def fail(self, message: str) -> None:
        """End the stream with :meth:`error_events` instead of closing it without a word."""
        try:
            self.write(self.error_events(message))
            await self.response.write_eof()
        except ConnectionError:
            pass  # the client is gone: nobody to tell

    async def drain(self) -> None:
        # The response is prepared already, so prepare() just returns its writer.
        writer = await self.response.prepare(self.request)
        if writer is not None:
            await writer.drain()

    def _transport(self) -> asyncio.WriteTransport:
        transport = self._connection
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        return cast(asyncio.WriteTransport, transport)


class StreamCutError(Exception):
    """Raised to cut a stream on purpose (``--stream-cut-rate``)."""


class CuttingSink(RelaySink):
    """Passes tokens through until ``after`` of them were written, then cuts the stream."""

    def __init__(self, inner: TokenSink, after: int) -> None:
        super().__init__(inner)
        self._left = after

    def tokens(self, sequence: Sequence, start: int, texts: Seq[str]) -> bool:
        if self._left <= 0:
            raise StreamCutError
        allowed = texts[: self._left]
        self._left -= len(allowed)
        backed_up = self._inner.tokens(sequence, start, allowed)
        if len(allowed) < len(texts):
            raise StreamCutError
        return backed_up


async def open_stream(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(headers={**SSE_HEADERS, **headers})
    if request.version >= (1, 1):
        response.enable_chunked_encoding()  # so that ``response.chunked`` says so
    await response.prepare(request)
    return response


async def close_stream(
    response: web.StreamResponse, meta: ResponseMeta, group: RequestGroup, include_usage: bool
) -> None:
    if include_usage:
        body = {**meta.header(), "choices": [], "usage": usage(group)}
        if meta.fingerprint is not None:
            body["system_fingerprint"] = meta.fingerprint
        if meta.metrics is not None:
            body["metrics"] = meta.metrics(group.sequences[0])
        await response.write(b"data: " + dumps(body) + b"\n\n")
    await response.write(DONE)
    await response.write_eof()
