"""What a rendered chat request decided, carried through ``/inference/v1/generate``.

A chat answer reports a thought and tool calls as fields; a tokens-out answer must write
them into its tokens, as a model does, for derender's parsers to find them again. Render
records in vLLM's ``sampling_params.extra_args`` (free for plugins, ignored by vLLM's
sampler) what the chat answer would start with: a thought (the server's reasoning parser
and the request's template kwargs say so) and the calls an ``auto`` tool choice made with
the request's seed. Generate runs its completions request with those decisions, so the
engine produces the tokens chat produces, and writes the structure as markup:
``<think>…</think>`` around the thought and Hermes' ``<tool_call>{"name", "arguments"}
</tool_call>`` around each call (:func:`markup`), the text derender parses
(:mod:`llmsim.api.openai.derender_parse`).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence as Seq
from typing import Any

from pydantic import PrivateAttr

from llmsim.api.http.jsonio import dumps
from llmsim.api.openai.constrained import chat_answer, request_rng
from llmsim.api.openai.parser_flags import reasoning_of
from llmsim.api.openai.schemas import ChatCompletionRequest, CompletionRequest
from llmsim.engine import Answer, Sequence
from llmsim.engine.answer import ToolCall
from llmsim.settings.model import Settings

EXTRA_KEY = "llmsim"
"""The key of ``sampling_params.extra_args`` that holds the rendered decisions."""
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>\n", "\n</tool_call>"


class RenderedCompletion(CompletionRequest):
    """The completions request generate runs, with the rendered chat decisions."""

    _thinks: bool = PrivateAttr(default=False)
    _answer: Answer | None = PrivateAttr(default=None)


def is_auto_tool_choice(body: ChatCompletionRequest) -> bool:
    """Tools the model may call or not (``auto``, the choice of tools sent without one)."""
    return bool(body.tools) and (body.tool_choice or "auto") == "auto"


def chat_decisions(body: ChatCompletionRequest, settings: Settings) -> dict[str, Any] | None:
    """``extra_args`` for the rendered request: what chat decides before its engine runs
    (None when it decides nothing generate would not)."""
    decided: dict[str, Any] = {}
    if settings.reasoning_parser is not None and reasoning_of(settings.reasoning_parser, body)[0]:
        decided["thinking"] = True
    if is_auto_tool_choice(body) and settings.enable_auto_tool_choice is not False:
        rng = request_rng(body.seed)
        answer = chat_answer(body, settings.tool_call_probability, rng)
        if answer is not None and answer.tool_calls:
            decided["tool_calls"] = [
                {"name": call.name, "arguments": call.arguments} for call in answer.tool_calls
            ]
    return {EXTRA_KEY: decided} if decided else None


def read_decisions(body: RenderedCompletion, params: dict[str, Any]) -> RenderedCompletion:
    """``body`` with the decisions a rendered request's ``extra_args`` holds."""
    extra = params.get("extra_args")
    decided = extra.get(EXTRA_KEY) if isinstance(extra, dict) else None
    if not isinstance(decided, dict):
        return body
    body._thinks = decided.get("thinking") is True
    calls = decided.get("tool_calls")
    if isinstance(calls, list) and calls:
        body._answer = Answer(tool_calls=tuple(_tool_call(call) for call in calls))
    return body


def _tool_call(call: Any) -> ToolCall:
    if not isinstance(call, dict):
        call = {}
    name, arguments = call.get("name"), call.get("arguments")
    return ToolCall(
        name if isinstance(name, str) else "",
        arguments if isinstance(arguments, str) else "{}",
    )


def rendered_thinking(body: object) -> bool:
    return isinstance(body, RenderedCompletion) and body._thinks


def rendered_answer(body: object) -> Answer | None:
    return body._answer if isinstance(body, RenderedCompletion) else None


def markup(sequence: Sequence) -> list[tuple[int, str]]:
    """The markup that writes ``sequence``'s structure into its text: ``(position, text)``,
    the text going before output token ``position`` (``len(output)``: after the last).
    A thought cut by ``max_tokens`` stays open, as a model's would."""
    size = len(sequence.output)
    marks: list[tuple[int, str]] = []
    end = sequence.reasoning_end
    if end:
        marks.append((0, THINK_OPEN))
        if end < size:
            marks.append((end, THINK_CLOSE))
    for span in sequence.tool_calls:
        opener = CALL_OPEN + '{"name": ' + dumps(span.name).decode() + ', "arguments": '
        marks.append((span.start, opener))
        if span.end <= size:
            marks.append((span.end, "}" + CALL_CLOSE))
    return marks


def marked_ids(
    marks: Seq[tuple[int, str]],
    encode: Callable[[str], list[int]],
    ids: Seq[int],
    start: int,
    last: bool,
) -> list[int]:
    """``ids`` (output tokens ``start:start+len(ids)``) with the markup's ids inserted;
    ``last``: the output's end is in this stretch (its closing markup follows)."""
    if not marks:
        return list(ids)
    stop = start + len(ids)
    out: list[int] = []
    place = 0
    for position, text in marks:
        if position < start or position > stop or (position == stop and not last):
            continue
        out.extend(ids[place : position - start])
        place = position - start
        out.extend(encode(text))
    out.extend(ids[place:])
    return out
