"""Conversation datasets (``--dataset FILE``): recorded answers and realistic answer lengths.

Reads the two common forms, one conversation per record:

* ShareGPT: ``{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", ...}]}``,
  as a JSON array or one record per line (JSONL);
* OpenAI chat JSONL: ``{"messages": [{"role": "user", "content": "..."}, ...]}``.

Every assistant turn becomes an answer: for an exact lookup it is keyed by a digest of the
normalised messages before it (roles, whitespace-collapsed text), and random mode draws from
all of them. The file is read as a stream and only the answers' UTF-8 bytes, their offsets
and 16-byte digests are kept, so a large file needs about as much memory as its answers.
"""

from __future__ import annotations

import json
import random
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from llmsim.answers.choice import Choice
from llmsim.answers.view import RequestView
from llmsim.engine import Answer

CHUNK = 1 << 20
START_KEY = 0x6C6C6D73696D
ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",
}


def _line_parser() -> Callable[[str], Any]:
    """orjson for JSONL when installed (``llmsim[fast]``): about twice as fast to load."""
    try:
        import orjson
    except ImportError:
        return json.loads
    return orjson.loads


parse_line = _line_parser()


class DatasetError(ValueError):
    """The file could not be read as a conversation dataset; the message is one line."""


def normalise(role: str, text: str) -> tuple[str, str]:
    """The form both sides are compared in: canonical role, whitespace collapsed."""
    return canonical_role(role), flatten(text)


def flatten(text: str) -> str:
    """``text`` with runs of whitespace as one space; most turns need only the quick path."""
    if "  " in text or "\n" in text or "\t" in text or "\r" in text:
        return " ".join(text.split())
    return text.strip()


def canonical_role(role: str) -> str:
    """ShareGPT's ``human``/``gpt`` and OpenAI's roles, in OpenAI's words."""
    return ROLES.get(role) or ROLES.get(role.lower()) or role.lower()


def conversation_key(messages: Iterable[tuple[str, str]]) -> int:
    """The lookup key of a conversation so far (the messages an answer follows).

    A chain of Python's own string hashes: fast to build for every turn of a large file,
    and only ever compared within the process that built it.
    """
    key = START_KEY
    for role, text in messages:
        key = hash((key, *normalise(role, text)))
    return key


class Dataset:
    """The answers of a dataset, an exact-match index, and draws for random mode."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.conversations = 0
        self._blob = bytearray()
        self._offsets = array("Q", [0])
        self._index: dict[int, int] = {}

    def __len__(self) -> int:
        """The number of answers (assistant turns)."""
        return len(self._offsets) - 1

    def answer(self, number: int) -> str:
        start, end = self._offsets[number], self._offsets[number + 1]
        return self._blob[start:end].decode()

    def add(self, messages: Iterable[tuple[str, str]]) -> None:
        """Index one conversation's assistant turns."""
        key = START_KEY
        roles, index, offsets = ROLES, self._index, self._offsets
        turns = list(messages)
        last = len(turns) - 1
        for position, (name, text) in enumerate(turns):
            role = roles.get(name) or canonical_role(name)
            if role == "assistant" and text:
                index.setdefault(key, len(offsets) - 1)
                self._blob += text.encode()
                offsets.append(len(self._blob))
            if position < last:  # the last turn's key would never be looked up
                key = hash((key, role, flatten(text)))
        self.conversations += 1

    def exact(self, view: RequestView) -> Choice | None:
        """The recorded answer of the same conversation, if the dataset has it."""
        number = self._index.get(conversation_key(view.messages))
        if number is None:
            return None
        return Choice("dataset", answer=Answer(self.answer(number)))

    def draw(self, view: RequestView, rng: random.Random) -> Choice | None:
        """Any assistant turn: real answer texts and lengths for random mode."""
        if not len(self):
            return None
        chooser = random.Random(view.seed) if view.seed is not None else rng
        return Choice("dataset", answer=Answer(self.answer(chooser.randrange(len(self)))))


_LOADED: dict[tuple[Path, float], Dataset] = {}


def shared_dataset(path: Path) -> Dataset:
    """One copy per process: data-parallel ranks in one process share it (read-only)."""
    resolved = path.resolve()
    try:
        key = (resolved, resolved.stat().st_mtime)
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror}") from None
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load_dataset(path)
    return _LOADED[key]


def load_dataset(path: Path) -> Dataset:
    """Stream ``path`` into a :class:`Dataset`; :class:`DatasetError` names the record."""
    dataset = Dataset(str(path))
    try:
        with path.open(encoding="utf-8") as handle:
            for number, record in enumerate(_records(handle), start=1):
                dataset.add(_messages(record, number))
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text") from None
    if not len(dataset):
        raise DatasetError(f"{path} has no assistant turns")
    return dataset


def conversations(path: Path) -> Iterator[list[tuple[str, str]]]:
    """Each conversation of ``path`` as ``(role, text)`` turns, read lazily (a workload
    draws its requests from them); :class:`DatasetError` names the record."""
    try:
        with path.open(encoding="utf-8") as handle:
            for number, record in enumerate(_records(handle), start=1):
                yield _messages(record, number)
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text") from None


def _records(handle: IO[str]) -> Iterator[Any]:
    first = handle.read(1)
    while first and first.isspace():
        first = handle.read(1)
    if first == "[":
        yield from _array_items(handle)
        return
    line_number = 1
    pending = first + handle.readline()
    while pending:
        if pending.strip():
            try:
                yield parse_line(pending)
            except ValueError as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise DatasetError(f"line {line_number}: not JSON ({reason})") from None
        pending = handle.readline()
        line_number += 1


def _array_items(handle: IO[str]) -> Iterator[Any]:
    """The items of a top-level JSON array, read a chunk at a time."""
    decoder = json.JSONDecoder()
    buffer, position, done = "", 0, False
    while True:
        while position < len(buffer) and buffer[position] in " \t\r\n,":
            position += 1
        if position < len(buffer) and buffer[position] == "]":
            return
        try:
            item, end = decoder.raw_decode(buffer, position)
        except json.JSONDecodeError as exc:
            if done:
                raise DatasetError(f"not a JSON array of conversations ({exc.msg})") from None
            chunk = handle.read(CHUNK)
            done = not chunk
            buffer, position = buffer[position:] + chunk, 0
            continue
        if end == len(buffer) and not done:
            chunk = handle.read(CHUNK)  # a number may go on in the next chunk
            done = not chunk
            buffer, position = buffer[position:] + chunk, 0
            continue
        yield item
        position = end
        if position > CHUNK:
            buffer, position = buffer[position:], 0


def _messages(record: Any, number: int) -> list[tuple[str, str]]:
    if type(record) is dict:
        turns = record.get("conversations")
        if turns is None:
            turns = record.get("messages")
        if type(turns) is list:
            return [_turn(turn, number) for turn in turns]
    raise DatasetError(
        f"conversation {number}: expected 'conversations' (ShareGPT) or 'messages' (OpenAI chat)"
    )


def _turn(turn: Any, number: int) -> tuple[str, str]:
    if type(turn) is dict:
        role = turn.get("from") or turn.get("role")
        text = turn.get("value")
        if text is None:
            text = turn.get("content")
        if type(text) is str and type(role) is str:
            return role, text
        if isinstance(text, list):  # OpenAI content parts
            text = "".join(str(part.get("text", "")) for part in text if isinstance(part, dict))
        if text is None:
            text = ""
        if isinstance(role, str) and isinstance(text, str):
            return role, text
    raise DatasetError(f"conversation {number}: a turn needs from/value or role/content text")
