"""``/v1/chat/completions`` bodies and stream chunks, tool calls included.

Tool calls are streamed as vLLM streams them: each call's first delta carries its
``index``, ``id``, ``type`` and function ``name`` with the first argument fragment, the
following deltas only ``index`` and argument fragments; the last chunk says
``finish_reason: "tool_calls"`` (or ``length`` when ``max_tokens`` cut the arguments).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence as Seq
from typing import Any

from aiohttp import web

from llmsim.api.http.jsonio import dumps
from llmsim.api.http.sse import NOT_FINISHED, ResponseMeta, StreamSink, finish_fields, usage
from llmsim.api.openai.logprobs import chat_logprobs, chat_prompt_logprobs
from llmsim.engine import RequestGroup, Sequence

TOOL_CALL_ID_PREFIX = "chatcmpl-tool-"


def tool_call_id() -> str:
    """vLLM's form: ``chatcmpl-tool-`` and 32 hex digits."""
    return TOOL_CALL_ID_PREFIX + uuid.uuid4().hex


def chat_body(meta: ResponseMeta, group: RequestGroup) -> dict[str, Any]:
    plan = meta.plan
    settings = group.engine.settings
    reasoning = None if settings.reasoning_parser is None else meta.reasoning_shown
    return {
        **meta.header(),
        "choices": [
            {
                "index": sequence.index,
                "message": chat_message(sequence, settings.response_role, reasoning),
                "logprobs": None if plan is None else chat_logprobs(plan, sequence),
                "finish_reason": sequence.api_finish_reason,
                "stop_reason": sequence.stop_reason,
            }
            for sequence in group.sequences
        ],
        "usage": usage(group),
        "system_fingerprint": meta.fingerprint,
        "prompt_logprobs": None if plan is None else chat_prompt_logprobs(plan),
    }


def reasoning_field(parser: str | None, meta: ResponseMeta) -> bool | None:
    """What the message says of reasoning: None, no field (no reasoning parser, as before);
    False, ``"reasoning": null`` (the request's ``include_reasoning: false``); True, the
    thought. (:func:`chat_body` spells it out.)"""
    if parser is None:
        return None
    return meta.reasoning_shown


def chat_message(
    sequence: Sequence, role: str = "assistant", reasoning: bool | None = None
) -> dict[str, Any]:
    """The answer's message; ``role`` is vLLM's ``--response-role``, ``reasoning`` as
    :func:`reasoning_field` says (vLLM's ``reasoning`` field, after the tool calls)."""
    if reasoning is not None:
        return _thinking_message(sequence, role, reasoning)
    if not sequence.tool_calls:
        return {"role": role, "content": sequence.text, "tool_calls": []}
    output = sequence.output
    content = "".join(output[: sequence.tool_calls[0].start])
    return {
        "role": role,
        "content": content or None,
        "tool_calls": _calls(sequence),
    }


def _thinking_message(sequence: Sequence, role: str, shown: bool) -> dict[str, Any]:
    """A reasoning parser's message: the thought apart from the answer (``content`` is
    null when the thought used up every token)."""
    output = sequence.output
    end = min(sequence.reasoning_end, len(output))
    stop = sequence.tool_calls[0].start if sequence.tool_calls else len(output)
    content = "".join(output[end:stop])
    thought = "".join(output[:end])
    return {
        "role": role,
        "content": content if content or not end else None,
        "tool_calls": _calls(sequence),
        "reasoning": thought if shown and thought else None,
    }


def _calls(sequence: Sequence) -> list[dict[str, Any]]:
    output = sequence.output
    return [
        {
            "id": tool_call_id(),
            "type": "function",
            "function": {
                "name": span.name,
                "arguments": "".join(output[span.start : span.end]),
            },
        }
        for span in sequence.tool_calls
    ]


_OPEN_END = b'},"logprobs":null,' + NOT_FINISHED + b"}]}\n\n"
"""The end of a plain token chunk that is not a choice's last."""


class ChatStreamSink(StreamSink):
    _call_ids: dict[tuple[int, int], str] | None = None

    def __init__(
        self, request: web.BaseRequest, response: web.StreamResponse, meta: ResponseMeta
    ) -> None:
        super().__init__(request, response, meta)
        self.reasoning_shown = meta.reasoning_shown
        self.role = meta.role

    def start_chunk(self, index: int) -> bytes:
        role = self.role
        return self.chunk(
            index,
            b'"delta":{"role":'
            + (b'"assistant"' if role == "assistant" else dumps(role))
            + b',"content":""},"logprobs":null,"finish_reason":null,"stop_reason":null',
        )

    def plain_token_parts(self, index: int) -> tuple[bytes, bytes]:
        return self.head(index) + b'"delta":{"content":', _OPEN_END

    def token_chunk(
        self, sequence: Sequence, text: str, last: bool, pieces: Seq[str] | None = None
    ) -> bytes:
        if self.logprobs is not None:
            return self.chunk(
                sequence.index,
                b'"delta":{"content":'
                + dumps(text)
                + b'},"logprobs":'
                + self.logprobs.chat(sequence, pieces or (text,))
                + b","
                + finish_fields(sequence, last),
            )
        if not last:  # spelled out: this runs once per streamed token
            return self.head(sequence.index) + b'"delta":{"content":' + dumps(text) + _OPEN_END
        return self.chunk(
            sequence.index,
            b'"delta":{"content":'
            + dumps(text)
            + b'},"logprobs":null,'
            + finish_fields(sequence, True),
        )

    def end_chunk(self, sequence: Sequence) -> bytes:
        return self.chunk(
            sequence.index,
            b'"delta":{"content":""},"logprobs":null,' + finish_fields(sequence, True),
        )

    def tool_token_chunk(
        self,
        sequence: Sequence,
        position: int,
        text: str,
        last: bool,
        pieces: Seq[str] | None = None,
    ) -> bytes:
        if position < sequence.reasoning_end:
            return self._reasoning_chunk(sequence, text, last, pieces)
        number = _call_at(sequence, position)
        if number is None:
            return self.token_chunk(sequence, text, last, pieces)
        span = sequence.tool_calls[number]
        call: dict[str, Any] = {"index": number}
        if position == span.start:
            call["id"] = self._call_id(sequence.index, number)
            call["type"] = "function"
            call["function"] = {"name": span.name, "arguments": text}
        else:
            call["function"] = {"arguments": text}
        return self.chunk(
            sequence.index,
            b'"delta":{"tool_calls":['
            + dumps(call)
            + b']},"logprobs":'
            + (
                b"null"
                if self.logprobs is None
                else self.logprobs.chat(sequence, pieces or (text,))
            )
            + b","
            + finish_fields(sequence, last),
        )

    def _reasoning_chunk(
        self, sequence: Sequence, text: str, last: bool, pieces: Seq[str] | None
    ) -> bytes:
        """A token of the thought: a ``reasoning`` delta, or nothing when the request said
        ``include_reasoning: false`` (the choice's last chunk still ends it)."""
        logprobs = b"null"
        if self.logprobs is not None:
            logprobs = self.logprobs.chat(sequence, pieces or (text,))
        if not self.reasoning_shown:
            return self.end_chunk(sequence) if last else b""
        return self.chunk(
            sequence.index,
            b'"delta":{"reasoning":'
            + dumps(text)
            + b'},"logprobs":'
            + logprobs
            + b","
            + finish_fields(sequence, last),
        )

    def _call_id(self, choice: int, number: int) -> str:
        if self._call_ids is None:
            self._call_ids = {}
        return self._call_ids.setdefault((choice, number), tool_call_id())


def _call_at(sequence: Sequence, position: int) -> int | None:
    """Which tool call the token at ``position`` belongs to (None: text before the calls)."""
    for number, span in enumerate(sequence.tool_calls):
        if span.start <= position < span.end:
            return number
    return None
