"""What an upstream answer said and when: text, tool calls, finish reason, usage, timing.

Fed the raw bytes of a JSON body or of an SSE stream as they arrive, so the proxy can pass
them on unchanged and still know what was answered.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ChoiceCapture:
    text: str = ""
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)
    finish_reason: str | None = None

    def as_record(self) -> dict[str, Any]:
        calls = [self.tool_calls[index] for index in sorted(self.tool_calls)]
        return {"text": self.text, "tool_calls": calls, "finish_reason": self.finish_reason}


@dataclass
class Capture:
    """One upstream answer being read; ``started`` is when the request went out."""

    started: float = field(default_factory=time.monotonic)
    sent_at: float = field(default_factory=time.time)
    """Wall-clock send time, so a simulation can replay the recorded arrivals."""
    choices: dict[int, ChoiceCapture] = field(default_factory=dict)
    usage: Any = None
    error: Any = None
    first_token_at: float | None = None
    token_times: list[float] = field(default_factory=list)
    _pending: bytes = b""

    def choice(self, index: int) -> ChoiceCapture:
        return self.choices.setdefault(index, ChoiceCapture())

    # -- streamed ---------------------------------------------------------------------
    def feed(self, data: bytes, now: float | None = None) -> None:
        """Bytes of an SSE stream; complete events are read, the rest is kept."""
        now = time.monotonic() if now is None else now
        self._pending += data
        *events, self._pending = self._pending.replace(b"\r\n", b"\n").split(b"\n\n")
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    self._event(line[5:].strip(), now)

    def _event(self, payload: bytes, now: float) -> None:
        if not payload or payload == b"[DONE]":
            return
        try:
            chunk = json.loads(payload)
        except ValueError:
            return
        if not isinstance(chunk, dict):
            return
        if "error" in chunk:
            self.error = chunk["error"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        produced = False
        for item in chunk.get("choices") or ():
            produced |= self._delta(item)
        if produced:
            if self.first_token_at is None:
                self.first_token_at = now
            self.token_times.append(now)

    def _delta(self, item: Any) -> bool:
        if not isinstance(item, dict):
            return False
        choice = self.choice(int(item.get("index", 0)))
        delta: dict[str, Any] = item["delta"] if isinstance(item.get("delta"), dict) else item
        text = delta.get("content") if "delta" in item else item.get("text")
        produced = bool(text)
        if isinstance(text, str):
            choice.text += text
        for call in delta.get("tool_calls") or ():
            produced = True
            slot = choice.tool_calls.setdefault(
                int(call.get("index", 0)), {"name": "", "arguments": ""}
            )
            function = call.get("function") or {}
            slot["name"] += function.get("name") or ""
            slot["arguments"] += function.get("arguments") or ""
        if item.get("finish_reason"):
            choice.finish_reason = item["finish_reason"]
        return produced

    # -- whole bodies -------------------------------------------------------------------
    def whole(self, body: bytes, now: float | None = None) -> None:
        """A complete JSON answer (not streamed, or an error)."""
        now = time.monotonic() if now is None else now
        self.first_token_at = now
        try:
            data = json.loads(body)
        except ValueError:
            self.error = {"message": body[:500].decode(errors="replace")}
            return
        if not isinstance(data, dict):
            return
        if "error" in data:
            self.error = data["error"]
        self.usage = data.get("usage")
        for item in data.get("choices") or ():
            if not isinstance(item, dict):
                continue
            choice = self.choice(int(item.get("index", 0)))
            message: dict[str, Any] = (
                item["message"] if isinstance(item.get("message"), dict) else {}
            )
            text = message.get("content") if message else item.get("text")
            choice.text = text if isinstance(text, str) else ""
            for number, call in enumerate(message.get("tool_calls") or ()):
                function = call.get("function") or {}
                choice.tool_calls[number] = {
                    "name": str(function.get("name", "")),
                    "arguments": str(function.get("arguments", "")),
                }
            choice.finish_reason = item.get("finish_reason")

    # -- the record ---------------------------------------------------------------------
    def record(
        self, endpoint: str, request: Any, status: int, stream: bool, now: float | None = None
    ) -> dict[str, Any]:
        """One JSONL line: the request, the answer and the measured timing.

        ``ttft`` and ``gaps`` are only known for streamed answers; ``latency`` is the time
        until the whole answer had arrived.
        """
        now = time.monotonic() if now is None else now
        first = self.first_token_at if stream else None
        ttft = None if first is None else first - self.started
        times = self.token_times
        gaps = [round(later - earlier, 6) for earlier, later in itertools.pairwise(times)]
        return {
            "endpoint": endpoint,
            "sent_at": round(self.sent_at, 6),
            "request": request,
            "status": status,
            "stream": stream,
            "choices": [self.choices[index].as_record() for index in sorted(self.choices)],
            "usage": self.usage,
            "error": self.error,
            "ttft": None if ttft is None else round(ttft, 6),
            "gaps": gaps if stream else [],
            "latency": round(now - self.started, 6),
        }
