"""Other API shapes served over the chat pipeline.

The Responses and Messages APIs are translations, as they are in vLLM: their request
becomes a chat request that runs through :func:`llmsim.api.openai.inference.generate` (scheduler,
limits, metrics, faults, latency model, abort on disconnect), and the chat answer is
translated back. Streams are translated chunk by chunk: the chat sink writes its chunks
into a :class:`ChunkTranslator` instead of the socket, so whatever chat streams (text,
tool-call deltas) reaches the other shape the same way.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, replace
from typing import Any, Protocol

from aiohttp import web

from llmsim.answers.view import Api
from llmsim.api.http.jsonio import loads
from llmsim.api.http.requests import validate_body
from llmsim.api.http.sse import ResponseMeta, StreamSink, usage
from llmsim.api.openai.constrained import same_name
from llmsim.api.openai.inference import CHAT, Flavor
from llmsim.api.openai.schemas import ChatCompletionRequest
from llmsim.engine import PromptInput, RequestGroup, Sequence

_TOOL_SCHEMA = re.compile(r"tools\[(\d+)\]\.function\.parameters")


def random_hex(bits: int = 128) -> str:
    return f"{random.getrandbits(bits):0{bits // 4}x}"


def sse_event(name: str, body: bytes) -> bytes:
    """One named server-sent event, as the Responses and Anthropic streams frame them."""
    return b"event: " + name.encode() + b"\ndata: " + body + b"\n\n"


class ChunkTranslator(Protocol):
    """Turns the chat stream of one request into another API's events (pre-encoded SSE)."""

    def opening(self) -> bytes:
        """Events sent as soon as the stream opens, before any token."""
        ...

    def feed(self, chunk: dict[str, Any]) -> bytes:
        """Events for one ``chat.completion.chunk``."""
        ...

    def closing(self, usage: dict[str, int]) -> bytes:
        """Events that end the stream, once every token was sent."""
        ...

    def failure(self, message: str) -> bytes:
        """Events that end a stream that failed after it opened."""
        ...


class DeltaTranslator:
    """The part every :class:`ChunkTranslator` shares: a chat chunk's deltas turned into
    events in the order chat sends them (thought, text, tool calls), and the finish noted."""

    finish_reason: str | None = None

    def feed(self, chunk: dict[str, Any]) -> bytes:
        """Events for one ``chat.completion.chunk``."""
        events: list[bytes] = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("reasoning"):
                events.append(self._reasoning(delta["reasoning"]))
            if delta.get("content"):
                events.append(self._text(delta["content"]))
            for call in delta.get("tool_calls") or []:
                events.append(self._call(call))
            if choice.get("finish_reason") is not None:
                self._finished(choice)
        return b"".join(events)

    def _finished(self, choice: dict[str, Any]) -> None:
        self.finish_reason = choice["finish_reason"]

    def _reasoning(self, text: str) -> bytes:
        raise NotImplementedError

    def _text(self, text: str) -> bytes:
        raise NotImplementedError

    def _call(self, call: dict[str, Any]) -> bytes:
        raise NotImplementedError


def chat_chunks(data: bytes) -> list[dict[str, Any]]:
    """The ``data:`` payloads of SSE bytes written by the chat sink."""
    chunks: list[dict[str, Any]] = []
    for event in data.split(b"\n\n"):
        if event.startswith(b"data: ") and event != b"data: [DONE]":
            chunks.append(loads(event[6:]))
    return chunks


class TranslatingSink(StreamSink):
    """A stream sink that runs the chat sink and writes its chunks as translated events."""

    def __init__(
        self,
        request: web.BaseRequest,
        response: web.StreamResponse,
        meta: ResponseMeta,
        translator: ChunkTranslator,
    ) -> None:
        super().__init__(request, response, meta)
        self.translator = translator
        self._chat = CHAT.sink(request, response, meta)
        self._chat.write = self._relay  # type: ignore[method-assign]
        self.write(translator.opening())

    def tokens(self, sequence: Sequence, start: int, texts: Seq[str]) -> bool:
        return self._chat.tokens(sequence, start, texts)

    def finished(self, sequence: Sequence) -> None:
        self._chat.finished(sequence)

    def _relay(self, data: bytes) -> bool:
        events = b"".join(self.translator.feed(chunk) for chunk in chat_chunks(data))
        return self.write(events) if events else False

    def error_events(self, message: str) -> bytes:
        return self.translator.failure(message)

    async def close(self, meta: ResponseMeta, group: RequestGroup, include_usage: bool) -> None:
        self.write(self.translator.closing(usage(group)))
        await self.response.write_eof()


@dataclass
class Exchange:
    """One translated request: what the adapter learns while the chat pipeline runs it."""

    id_prefix: str
    object: str
    prompt_tokens: int = 0

    def flavor(
        self,
        body: Callable[[dict[str, Any], ResponseMeta], dict[str, Any]],
        translator: Callable[[ResponseMeta], ChunkTranslator],
        prompt_param: str = "messages",
        api: Api = "messages",
        rename_param: Callable[[str], str] = same_name,
    ) -> Flavor:
        """A chat flavor whose JSON body and stream come out in another API's shape."""

        def prompts(request: Any, *context: Any) -> list[PromptInput]:
            inputs = list(CHAT.prompts(request, *context))
            self.prompt_tokens = sum(prompt.token_count for prompt in inputs)
            return inputs

        def render(meta: ResponseMeta, group: RequestGroup) -> dict[str, Any]:
            return body(CHAT.body(meta, group), meta)

        def sink(
            request: web.BaseRequest, response: web.StreamResponse, meta: ResponseMeta
        ) -> StreamSink:
            return TranslatingSink(request, response, meta, translator(meta))

        # Everything else (how the output is planned, ...) stays chat's.
        return replace(
            CHAT,
            id_prefix=self.id_prefix,
            object=self.object,
            chunk_object=self.object,
            prompt_param=prompt_param,
            body=render,
            sink=sink,
            prompts=prompts,
            api=api,
            pieces=None,
            rename_param=rename_param,
        )


def renamer(response_format: str, tool_schema: str) -> Callable[[str], str]:
    """Chat's field names as another API spells them: ``response_format`` and
    ``tools[i].function.parameters`` (``tool_schema`` is a format with ``{index}``)."""

    def rename(param: str) -> str:
        if param == "response_format":
            return response_format
        match = _TOOL_SCHEMA.fullmatch(param)
        return tool_schema.format(index=match[1]) if match else param

    return rename


def chat_request(data: dict[str, Any]) -> ChatCompletionRequest:
    """The chat request a translation built, validated as chat validates its bodies."""
    return validate_body(ChatCompletionRequest, data)
