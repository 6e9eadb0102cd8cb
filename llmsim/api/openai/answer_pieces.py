"""Whole (non-streamed) answers written in pieces, for answers with logprobs or many tokens.

A chat answer with ``n: 16``, 1 000 tokens and ``top_logprobs: 20`` is 20 MB of JSON and a
second or more of work; built as one dict and serialised at once, it would hold the event loop
for all of that time and the memory for all of it at once. Here the answer is made slice by
slice (:data:`SLICE` token positions at a time), written with chunked transfer, and the writer
returns to the event loop between slices, so other requests keep being served. The bytes are
those the one-piece answer has: the same keys in the same order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from aiohttp import web

from llmsim.api.http.jsonio import dumps
from llmsim.api.http.sse import ResponseMeta, usage
from llmsim.api.openai.chat import chat_message, reasoning_field
from llmsim.api.openai.logprobs import (
    OutputPlan,
    Step,
    chat_content,
    prompt_logprobs_json,
    token_labels,
    top_dict,
)
from llmsim.engine import RequestGroup, Sequence

SLICE = 16
"""Token positions made between two returns to the event loop (a few milliseconds with 20
logprobs each)."""
FLUSH = 64 * 1024
"""Bytes gathered before a write to the connection."""
PAUSE = b""
"""A piece with no bytes: a point where the writer lets the event loop run."""

Pieces = Callable[[ResponseMeta, RequestGroup, dict[str, Any]], Iterator[bytes]]
"""An answer's pieces; the dict holds fields added at its end (``kv_transfer_params``)."""


async def write_pieces(
    request: web.Request, pieces: Iterable[bytes], headers: dict[str, str] | None
) -> web.StreamResponse:
    """Send ``pieces`` as one JSON answer, yielding to the event loop after each of them."""
    response = web.StreamResponse(headers=headers)
    response.content_type = "application/json"
    if request.version >= (1, 1):
        response.enable_chunked_encoding()
    await response.prepare(request)
    pending: list[bytes] = []
    size = 0
    for piece in pieces:
        if piece:
            pending.append(piece)
            size += len(piece)
            if size < FLUSH:
                continue
            await response.write(b"".join(pending))  # waits while the client is behind
            pending.clear()
            size = 0
        await asyncio.sleep(0)
    await response.write(b"".join(pending))
    await response.write_eof()
    return response


def chat_pieces(meta: ResponseMeta, group: RequestGroup, extra: dict[str, Any]) -> Iterator[bytes]:
    """:func:`llmsim.api.openai.chat.chat_body`, in pieces."""
    plan = meta.plan
    settings = group.engine.settings
    role, reasoning = settings.response_role, reasoning_field(settings.reasoning_parser, meta)
    yield dumps(meta.header())[:-1] + b',"choices":['
    for number, sequence in enumerate(group.sequences):
        yield (
            (b"," if number else b"")
            + b'{"index":%d,"message":' % sequence.index
            + dumps(chat_message(sequence, role, reasoning))
            + b',"logprobs":'
        )
        if plan is None or plan.logprobs is None:
            yield b"null"
        else:
            yield from _chat_logprobs(plan, sequence)
        yield _finish(sequence) + b"}"
    yield (
        b'],"usage":'
        + dumps(usage(group))
        + b',"system_fingerprint":'
        + dumps(meta.fingerprint)
        + b',"prompt_logprobs":'
    )
    if plan is None or plan.prompt_logprobs is None:
        yield b"null"
    else:
        yield from _prompt_logprobs(plan, 0, plan.prompt_logprobs)
    yield _extra(extra) + b"}"


def completion_pieces(
    meta: ResponseMeta, group: RequestGroup, extra: dict[str, Any]
) -> Iterator[bytes]:
    """:func:`llmsim.api.openai.completions.completion_body`, in pieces."""
    plan = meta.plan
    yield dumps(meta.header())[:-1] + b',"choices":['
    for number, sequence in enumerate(group.sequences):
        text = sequence.text
        if plan is not None and plan.echo:
            text = plan.prompts[plan.prompt_of(sequence.index)] + text
        yield (
            (b"," if number else b"")
            + b'{"index":%d,"text":' % sequence.index
            + dumps(text)
            + b',"logprobs":'
        )
        if plan is None or plan.logprobs is None:
            yield b"null"
        else:
            yield from _completion_logprobs(plan, sequence, plan.logprobs)
        yield _finish(sequence) + b',"prompt_logprobs":'
        if plan is None or plan.prompt_logprobs is None:
            yield b"null"
        else:
            yield from _prompt_logprobs(plan, sequence.index, plan.prompt_logprobs)
        yield b"}"
    yield (
        b'],"usage":'
        + dumps(usage(group))
        + b',"system_fingerprint":'
        + dumps(meta.fingerprint)
        + _extra(extra)
        + b"}"
    )


def _finish(sequence: Sequence) -> bytes:
    return (
        b',"finish_reason":'
        + dumps(sequence.api_finish_reason)
        + b',"stop_reason":'
        + dumps(sequence.stop_reason)
    )


def _extra(extra: dict[str, Any]) -> bytes:
    return b"," + dumps(extra)[1:-1] if extra else b""


def _items(encoded_list: bytes, first: bool) -> bytes:
    """The items of a JSON array's encoding, with the comma that joins them to earlier ones."""
    items = encoded_list[1:-1]
    return items if first or not items else b"," + items


def _chat_logprobs(plan: OutputPlan, sequence: Sequence) -> Iterator[bytes]:
    """``{"content": [...]}``, :data:`SLICE` tokens at a time."""
    yield b'{"content":['
    generated = sequence.output[: sequence.generated]
    for start in range(0, len(generated), SLICE):
        steps = plan.generated_steps(sequence.index, generated[start : start + SLICE], start)
        yield _items(dumps(chat_content(steps, plan.token_ids)), start == 0)
    yield b"]}"


def _prompt_logprobs(plan: OutputPlan, index: int, k: int) -> Iterator[bytes]:
    yield b"["
    first = True
    for steps in plan.prompt_step_slices(index, k, SLICE):
        yield _items(dumps(prompt_logprobs_json(steps)), first)
        first = False
    yield b"]"


def _completion_logprobs(plan: OutputPlan, sequence: Sequence, k: int) -> Iterator[bytes]:
    """The legacy ``logprobs`` object. Its four arrays run side by side, so the small three
    are gathered while the slices are made and the large one (``top_logprobs``) is kept
    encoded until its turn: one choice's worth, never the whole answer's."""
    offsets: list[int] = []
    values: list[float | None] = []
    tokens: list[str] = []
    tops: list[bytes] = []
    offset = 0
    for texts, steps in _completion_slices(plan, sequence, k):
        for text in texts:
            offsets.append(offset)
            offset += len(text)
        ids = plan.token_ids
        tokens.extend(token_labels(texts, steps, ids))
        values.extend(None if step is None else step.logprob for step in steps)
        tops.append(dumps([None if step is None else top_dict(step, ids) for step in steps]))
        yield PAUSE
    yield (
        b'{"text_offset":'
        + dumps(offsets)
        + b',"token_logprobs":'
        + dumps(values)
        + b',"tokens":'
        + dumps(tokens)
        + b',"top_logprobs":['
    )
    first = True
    for encoded in tops:
        piece = _items(encoded, first)
        first = first and not piece
        yield piece
    yield b"]}"


def _completion_slices(
    plan: OutputPlan, sequence: Sequence, k: int
) -> Iterator[tuple[list[str], list[Step | None]]]:
    """(token texts, steps) of the echoed prompt, then of the generated tokens."""
    index = sequence.index
    if plan.echo:
        texts = plan.prompt_pieces(index)
        for number, steps in enumerate(plan.prompt_step_slices(index, k, SLICE)):
            yield texts[number * SLICE : (number + 1) * SLICE], steps
    generated = sequence.output[: sequence.generated]
    for start in range(0, len(generated), SLICE):
        part = generated[start : start + SLICE]
        yield part, list(plan.generated_steps(index, part, start))
