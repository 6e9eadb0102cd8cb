"""Workloads read from files: a plain trace, a dataset ``llmsim serve`` reads, a recording.

A trace has one JSON object per line, in the order sent::

    {"at": 0.0, "prompt_tokens": 812, "output_tokens": 128}
    {"at": 0.25, "prompt": "Summarise this ...", "output_tokens": 64, "prefix": "sys-a", "prefix_tokens": 200}

``at`` is seconds from the start; the prompt is ``prompt_tokens`` (a count) or ``prompt``
(text, counted with the built-in tokenizer); ``prefix`` with ``prefix_tokens`` names a shared
first part (a system prompt) so requests with the same prefix hit the prefix cache;
``adapter`` names a LoRA adapter (the request goes to an instance serving it).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmsim.answers.dataset import DatasetError, conversations
from llmsim.answers.recording import prompt_messages, text_of
from llmsim.engine.tokenizer import count_tokens
from llmsim.simulation.synthetic import WorkloadError, check_arrivals, limited, send_times
from llmsim.simulation.workload import Request


def trace_requests(path: Path) -> Iterator[Request]:
    """The requests of a trace file; :class:`WorkloadError` names the file and line."""
    last = 0.0
    for number, record in _json_lines(path):
        try:
            request = _trace_request(record, number)
        except (TypeError, ValueError) as exc:
            raise WorkloadError(f"{path} line {number}: {exc}") from None
        if request.send_at < last:
            raise WorkloadError(f"{path} line {number}: 'at' goes back in time")
        last = request.send_at
        yield request


def _trace_request(record: Mapping[str, Any], number: int) -> Request:
    at = _number(record, "at", 0.0)
    output = int(_number(record, "output_tokens", None))
    if "prompt_tokens" in record:
        tokens = int(_number(record, "prompt_tokens", None))
    elif isinstance(record.get("prompt"), str):
        tokens = count_tokens(record["prompt"])
    else:
        raise ValueError("expected 'prompt_tokens' (a count) or 'prompt' (text)")
    prefix = record.get("prefix", "")
    if not isinstance(prefix, str):
        raise ValueError("'prefix' must be a string")
    prefix_tokens = int(_number(record, "prefix_tokens", 0.0)) if prefix else 0
    if tokens < 1 or output < 1 or prefix_tokens > tokens:
        raise ValueError("prompt and output need at least 1 token, prefix_tokens <= prompt")
    adapter = record.get("adapter")
    if adapter is not None and (not isinstance(adapter, str) or not adapter):
        raise ValueError("'adapter' must be a LoRA adapter's name")
    return Request(f"trace-{number}", tokens, output, at, prefix, prefix_tokens, adapter=adapter)


def _number(record: Mapping[str, Any], key: str, default: float | None) -> float:
    value = record.get(key, default)
    if value is None:
        raise ValueError(f"missing {key!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key!r} must be a number")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{key!r} must be a finite number >= 0")
    return float(value)


def _json_lines(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                    raise WorkloadError(f"{path} line {number}: not JSON ({reason})") from None
                if not isinstance(record, dict):
                    raise WorkloadError(f"{path} line {number}: expected a JSON object")
                yield number, record
    except OSError as exc:
        raise WorkloadError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise WorkloadError(f"{path} is not UTF-8 text") from None


def dataset_lengths(path: Path) -> Iterator[tuple[int, int]]:
    """(prompt tokens, output tokens) of each conversation's first answer, as vLLM's
    benchmark takes ShareGPT: everything before the first assistant turn is the prompt."""
    try:
        for turns in conversations(path):
            prompt = 0
            for role, text in turns:
                if role in ("assistant", "gpt", "model", "chatbot", "bot"):
                    if prompt and text:
                        yield prompt, count_tokens(text)
                    break
                prompt += count_tokens(text)
    except DatasetError as exc:
        raise WorkloadError(str(exc)) from None


def recording_requests(path: Path, speed: float) -> Iterator[tuple[float | None, int, int]]:
    """(send time or None, prompt tokens, output tokens) of each recorded request; the time
    is the recording's ``sent_at`` relative to the first, divided by ``speed``."""
    start: float | None = None
    for number, record in _json_lines(path):
        request = record.get("request")
        if not isinstance(request, Mapping):
            raise WorkloadError(f"{path} line {number}: expected a 'request' object")
        prompt = _prompt_text(request)
        output = _output_tokens(record)
        sent = record.get("sent_at")
        at: float | None = None
        if isinstance(sent, (int, float)) and not isinstance(sent, bool):
            start = float(sent) if start is None else start
            at = max(0.0, float(sent) - start) / speed
        yield at, max(1, count_tokens(prompt)), output


def _prompt_text(request: Mapping[str, Any]) -> str:
    messages = request.get("messages")
    if isinstance(messages, list):
        return "\n".join(text_of(m.get("content")) for m in messages if isinstance(m, dict))
    return "\n".join(text for _, text in prompt_messages(request.get("prompt", "")))


def _output_tokens(record: Mapping[str, Any]) -> int:
    usage = record.get("usage")
    if isinstance(usage, Mapping):
        count = usage.get("completion_tokens")
        if isinstance(count, int) and count > 0:
            return count
    choices = record.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        return max(1, count_tokens(str(choices[0].get("text") or "")))
    return 1


@dataclass(frozen=True, slots=True)
class TraceWorkload:
    """A trace file, sent as written."""

    path: Path

    def requests(self, seed: int) -> Iterator[Request]:
        return trace_requests(self.path)


@dataclass(frozen=True, slots=True)
class DatasetWorkload:
    """A ShareGPT or chat JSONL dataset's prompt and answer lengths, in file order, sent at
    ``rate``."""

    path: Path
    rate: float
    burstiness: float = 1.0
    count: int | None = None
    duration: float | None = None

    def requests(self, seed: int) -> Iterator[Request]:
        check_arrivals(self.rate, self.burstiness, self.count, self.duration)
        if not self.path.is_file():
            raise WorkloadError(f"cannot read {self.path}: not a file")
        return self._requests(random.Random(seed))

    def _requests(self, rng: random.Random) -> Iterator[Request]:
        times = limited(send_times(self.rate, self.burstiness, rng), self.count, self.duration)
        for number, (at, (prompt, output)) in enumerate(
            zip(times, dataset_lengths(self.path), strict=False)
        ):
            yield Request(f"dataset-{number}", prompt, output, at)


@dataclass(frozen=True, slots=True)
class RecordingWorkload:
    """A recording's requests at their recorded times (``speed`` 2 sends twice as fast);
    lines without a time are sent at ``rate``."""

    path: Path
    speed: float = 1.0
    rate: float = 1.0

    def requests(self, seed: int) -> Iterator[Request]:
        if not self.rate > 0 or not self.speed > 0:
            raise WorkloadError("--rate and --replay-speed must be above 0")
        return self._requests(random.Random(seed))

    def _requests(self, rng: random.Random) -> Iterator[Request]:
        fallback = send_times(self.rate, 1.0, rng)
        last = 0.0
        for number, (at, prompt, output) in enumerate(recording_requests(self.path, self.speed)):
            gap = next(fallback)
            last = max(last, at if at is not None else gap)
            yield Request(f"recorded-{number}", prompt, output, last)
