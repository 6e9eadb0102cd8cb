"""A batch of plain tokens is written byte for byte as the chunks of its tokens one by one."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp import web

from llmsim.api.http.sse import ResponseMeta, StreamSink
from llmsim.api.openai.chat import ChatStreamSink
from llmsim.api.openai.completions import CompletionStreamSink
from llmsim.engine import Sequence

TEXTS = ["Hello", ",", '"', "\\", '","', "é", "\n", "😀", " a", "", "\u2028", "}]}"]


class _Transport:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def _sink(kind: type[StreamSink]) -> tuple[StreamSink, _Transport]:
    transport = _Transport()
    request = cast(web.BaseRequest, SimpleNamespace(transport=transport))
    response = cast(web.StreamResponse, SimpleNamespace(chunked=False))
    meta = ResponseMeta(id="chatcmpl-1", object="chat.completion.chunk", created=1, model="m")
    return kind(request, response, meta), transport


def _sequence(index: int, output: list[str], finish: Any = "length") -> Sequence:
    future: asyncio.Future[None] = cast(Any, None)
    return Sequence("r", index, None, 3, output, finish, None, len(output), 1, 0.0, future)


def _one_by_one(sink: StreamSink, sequence: Sequence) -> bytes:
    last = len(sequence.output) - 1
    chunks = [
        sink.token_chunk(sequence, text, position == last)
        for position, text in enumerate(sequence.output)
    ]
    return sink.start_chunk(sequence.index) + b"".join(chunks)


@pytest.mark.parametrize("kind", [ChatStreamSink, CompletionStreamSink])
@pytest.mark.parametrize("batch", [1, 2, 5, len(TEXTS)])
def test_batches_write_what_single_tokens_would(kind: type[StreamSink], batch: int) -> None:
    sink, transport = _sink(kind)
    reference, _ = _sink(kind)
    for index in (0, 2):
        sequence = _sequence(index, TEXTS)
        for start in range(0, len(TEXTS), batch):
            sink.tokens(sequence, start, TEXTS[start : start + batch])
        expected = _one_by_one(reference, sequence)
        assert bytes(transport.data) == expected
        transport.data.clear()


def test_a_batch_that_ends_before_the_last_token_has_no_finish_reason() -> None:
    sink, transport = _sink(ChatStreamSink)
    sequence = _sequence(0, ["a", "b", "c"], "stop")
    sink.tokens(sequence, 0, ["a", "b"])
    assert b'"stop"' not in transport.data
    sink.tokens(sequence, 2, ["c"])
    assert transport.data.count(b'"finish_reason":"stop"') == 1
    assert transport.data.endswith(b'"finish_reason":"stop","stop_reason":null}]}\n\n')
