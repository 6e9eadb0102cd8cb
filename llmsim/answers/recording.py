"""Recordings of a real server's answers (``llmsim record``) and their replay (``--replay``).

One JSON object per line and per request::

    {"endpoint": "chat", "sent_at": 1765090000.25, "request": {...the body as sent...}, "status": 200, "stream": true,
     "choices": [{"text": "...", "tool_calls": [...], "finish_reason": "stop"}],
     "usage": {...}, "error": null, "ttft": 0.412, "gaps": [0.021, 0.020, ...],
     "latency": 0.61}

``sent_at`` is the wall-clock send time (``llmsim simulate --recording`` replays the
arrivals); ``ttft`` and ``gaps`` are measured on streamed answers; a non-streamed one has only its
``latency``, which a replay uses as the time to its first (and every) token.

A replayed request matches a recorded one when the endpoint, the ``model`` field, the
messages (or prompts) and every sampling-relevant field the client set are the same. Both
sides compute the key with :func:`request_key` from the fields the client actually sent,
so a default filled in by the server never breaks a match.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmsim.answers.choice import Choice, RuleError
from llmsim.answers.dataset import flatten
from llmsim.answers.view import RequestView
from llmsim.engine import Answer, TimingOverride, ToolCall

KEY_FIELDS = (
    "model",
    "n",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "stop",
    "ignore_eos",
    "min_tokens",
    "max_tokens",
    "max_completion_tokens",
    "tool_choice",
    "response_format",
)
"""Request fields that change what a model says, so a recording matches only on them."""


class RecordingError(ValueError):
    """A recording could not be read; the message is one line naming the line."""


def canonical(value: Any) -> Any:
    """JSON-equal values in one form: ``4.0`` and ``4`` alike, keys sorted on dumping."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(key): canonical(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    return value


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return ""


def prompt_messages(prompt: Any) -> tuple[tuple[str, str], ...]:
    """A completions prompt (text, list of texts, token IDs) as user messages."""
    if isinstance(prompt, str):
        return (("user", prompt),)
    if isinstance(prompt, list) and prompt and all(isinstance(item, str) for item in prompt):
        return tuple(("user", item) for item in prompt)
    return (("user", json.dumps(prompt)),)


def tool_names(tools: Any) -> list[str]:
    if not isinstance(tools, list):
        return []
    names = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping):
            names.append(str(function.get("name")))
    return names


def request_key(
    endpoint: str,
    messages: Sequence[tuple[str, str]],
    fields: Mapping[str, Any],
    tools: Sequence[str] = (),
) -> str:
    """The match key of a request: endpoint, messages, tools and the key fields it set."""
    material = [
        endpoint,
        [[role, flatten(text)] for role, text in messages],
        sorted(tools),
        {name: canonical(fields[name]) for name in KEY_FIELDS if fields.get(name) is not None},
    ]
    encoded = json.dumps(material, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.blake2b(encoded, digest_size=16).hexdigest()


def body_key(endpoint: str, body: Mapping[str, Any]) -> str:
    """:func:`request_key` of a request body as sent on the wire."""
    if endpoint == "chat":
        raw = body.get("messages")
        messages = [
            (str(message.get("role")), text_of(message.get("content")))
            for message in (raw if isinstance(raw, list) else [])
            if isinstance(message, Mapping)
        ]
    else:
        messages = list(prompt_messages(body.get("prompt")))
    return request_key(endpoint, messages, body, tool_names(body.get("tools")))


def view_key(view: RequestView) -> str:
    return request_key(view.endpoint, view.messages, view.sampling, list(view.tools or ()))


class Replay:
    """Recorded answers by request key; repeated requests get the recordings in turn."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self._answers: dict[str, list[Choice]] = {}
        self._turns: dict[str, int] = {}

    def __len__(self) -> int:
        return sum(len(choices) for choices in self._answers.values())

    def add(self, record: Mapping[str, Any], speed: float) -> None:
        endpoint = record.get("endpoint")
        request = record.get("request")
        if endpoint not in ("chat", "completions") or not isinstance(request, Mapping):
            raise RecordingError("expected 'endpoint' (chat or completions) and 'request'")
        key = body_key(str(endpoint), request)
        self._answers.setdefault(key, []).append(_choice(record, speed))

    def exact(self, view: RequestView) -> Choice | None:
        key = view_key(view)
        choices = self._answers.get(key)
        if not choices:
            return None
        turn = self._turns.get(key, 0)
        self._turns[key] = turn + 1
        return choices[turn % len(choices)]

    def draw(self, view: RequestView, rng: Any) -> Choice | None:
        return None


def _choice(record: Mapping[str, Any], speed: float) -> Choice:
    error = record.get("error")
    status = record.get("status", 200)
    if isinstance(status, int) and status >= 400:
        details = error if isinstance(error, Mapping) else {}
        return Choice(
            "replay",
            error=RuleError(
                status,
                str(details.get("type") or "InternalServerError"),
                str(details.get("message") or "Recorded upstream error."),
            ),
        )
    choices = record.get("choices")
    recorded = [c for c in choices if isinstance(c, Mapping)] if isinstance(choices, list) else []
    answers = [_recorded_answer(choice) for choice in recorded] or [Answer()]
    answer = replace(answers[0], others=tuple(answers[1:]))  # choice i says recorded choice i
    return Choice("replay", answer=answer, timing=_timing(record, speed))


def _recorded_answer(choice: Mapping[str, Any]) -> Answer:
    calls = tuple(
        ToolCall(str(call.get("name", "")), str(call.get("arguments", "")))
        for call in choice.get("tool_calls") or ()
        if isinstance(call, Mapping)
    )
    finish = choice.get("finish_reason")
    return Answer(
        str(choice.get("text") or ""),
        calls,
        finish if finish in ("stop", "length", "tool_calls") else None,
    )


def _timing(record: Mapping[str, Any], speed: float) -> TimingOverride | None:
    ttft = record.get("ttft")
    gaps = [gap for gap in record.get("gaps") or () if isinstance(gap, (int, float))]
    if not isinstance(ttft, (int, float)):
        ttft = record.get("latency")  # not streamed: the whole answer at once, as recorded
        gaps = []
    if not isinstance(ttft, (int, float)):
        return None
    mean_gap = statistics.fmean(gaps) if gaps else 0.0
    return TimingOverride(max(0.0, float(ttft)) / speed, max(0.0, mean_gap) / speed)


def load_replay(path: Path, speed: float = 1.0) -> Replay:
    """Read a recording made by ``llmsim record``."""
    replay = Replay(str(path))
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    if not isinstance(record, Mapping):
                        raise RecordingError("expected a JSON object")
                    replay.add(record, speed)
                except (ValueError, RecordingError) as exc:
                    reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                    raise RecordingError(f"line {number}: {reason}") from None
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {exc.strerror}") from None
    return replay
