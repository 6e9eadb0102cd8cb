"""Tokenizers: the built-in one (fast, no files) and the interface a real one fills in.

Every token count of the server goes through one :class:`Tokenizer`: prompt lengths,
``max_tokens``/``max_model_len`` checks, the split of generated text into streamed
tokens, ``usage`` and ``/tokenize``. With ``--tokenizer`` it is a Hugging Face
tokenizer (:mod:`llmsim.engine.hf_tokenizer`), so the numbers equal what a client
counts with the same files.

The built-in tokenizer splits text into pieces whose concatenation is the text: an
ASCII word piece of at most 8 characters with an optional space in front, any other
single character with an optional space in front, or a run of at most 8 ASCII
whitespace characters (the last space of a run goes with the word after it). English prose comes out at roughly 1.2 tokens per word, close
to what BPE tokenizers produce; CJK text at one token per character. Each piece has a
stable integer id computed from its text alone (no vocabulary table), so ids are the
same in every process and after every restart, and decode back to the exact text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from llmsim.engine.chat_template import ChatTemplate

MAX_WORD_PIECE = 8
_WORD = "A-Za-z0-9_"
_SPACE = " \t\n\r\f\v"
_TOKEN_RE = re.compile(
    rf" ?[{_WORD}]{{1,{MAX_WORD_PIECE}}}| ?[^{_WORD}{_SPACE}]"
    rf"|[{_SPACE}]{{1,{MAX_WORD_PIECE}}}?(?=[ ][^{_SPACE}])|[{_SPACE}]{{1,{MAX_WORD_PIECE}}}"
)
"""A whitespace run leaves its last space to the word after it, as GPT-2's rule does."""
_CUT = re.compile(rf"(?<=[^{_SPACE}])[ ]")
"""Where a long text may be cut without changing its tokens: before a space that follows a
non-space, where every token of :data:`_TOKEN_RE` ends and the next one starts."""
SLICE = 1 << 16
"""Characters tokenized per regex call, so a long text never holds the interpreter (and the
event loop waiting on it) for more than a few milliseconds at a time."""


def _pieces(text: str, size: int = SLICE) -> list[str]:
    """``_TOKEN_RE.findall(text)``, ``size`` characters or so at a time (the same tokens)."""
    if len(text) <= size:
        return _TOKEN_RE.findall(text)
    pieces: list[str] = []
    start, end = 0, len(text)
    while start < end:
        cut = _CUT.search(text, start + size) if start + size < end else None
        stop = end if cut is None else cut.start()
        pieces += _TOKEN_RE.findall(text, start, stop)
        start = stop
    return pieces


COUNT_MEMO_SIZE = 256
"""Texts whose token count :meth:`BuiltinTokenizer.count` remembers, the newest kept."""
COUNT_MEMO_CHARS = 4096
"""Only texts up to this long are remembered, so the memo stays under about a megabyte."""

GENERATION_PROMPT = "<|assistant|>\n"
"""The built-in chat format's header that asks the model to answer."""


class TokenizerError(Exception):
    """A tokenizer could not be loaded, or ids that are not in its vocabulary."""


@runtime_checkable
class Tokenizer(Protocol):
    """What the server needs from a tokenizer."""

    name: str
    """What ``--tokenizer`` named (``"builtin"`` for the built-in one)."""
    max_token_id: int
    """The largest id :meth:`decode` may accept."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``; ``add_special_tokens`` adds the model's BOS and the like."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; :class:`TokenizerError` for an id not in the vocabulary."""
        ...

    def count(self, text: str, add_special_tokens: bool = False) -> int:
        """``len(encode(text, add_special_tokens))``, as cheaply as possible."""
        ...

    def split(self, text: str) -> list[str]:
        """``text`` as one string per token, concatenating to ``text`` (for streaming)."""
        ...

    def token_strs(self, ids: Sequence[int]) -> list[str]:
        """Each id's own token string (``/tokenize``'s ``token_strs``)."""
        ...

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        **kwargs: Any,
    ) -> str:
        """The conversation as the prompt text the model would see."""
        ...

    def info(self) -> dict[str, Any]:
        """The tokenizer's configuration as vLLM's ``/tokenizer_info`` shows it."""
        ...


# -- stable ids of the built-in tokenizer -------------------------------------
# Three id ranges, one per kind of piece, each value computed from the piece's text:
#   [0, 2**22)                 one character (code point), bit 21 = a space in front;
#                              small ids are plain characters, so any id below 2**21
#                              that is a code point decodes
#   [2**22, 2**22 + 2**24)     a run of ASCII whitespace, 3 bits per character
#   [_WORD_BASE, + 2**49)      an ASCII word piece, 6 bits per character, bit 48 = space
_CHAR_SPACE = 1 << 21
_SPACE_BASE = 1 << 22
_WORD_BASE = _SPACE_BASE + (1 << 24)
_WORD_SPACE = 1 << 48
_WORD_DIGITS = {
    c: i + 1
    for i, c in enumerate("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
}
_WORD_CHARS = {v: k for k, v in _WORD_DIGITS.items()}
_SPACE_DIGITS = {c: i + 1 for i, c in enumerate(_SPACE)}
_SPACE_CHARS = {v: k for k, v in _SPACE_DIGITS.items()}
MAX_BUILTIN_ID = _WORD_BASE + 2 * _WORD_SPACE - 1


@lru_cache(maxsize=1 << 16)
def _piece_id(piece: str) -> int:
    first = piece[0]
    if first in _SPACE_DIGITS and (len(piece) == 1 or piece[1] in _SPACE_DIGITS):
        value = 0
        for position, char in enumerate(piece):
            value |= _SPACE_DIGITS[char] << (3 * position)
        return _SPACE_BASE + value
    spaced = first == " "
    body = piece[1:] if spaced else piece
    if body[0] in _WORD_DIGITS:
        value = _WORD_SPACE if spaced else 0
        for position, char in enumerate(body):
            value |= _WORD_DIGITS[char] << (6 * position)
        return _WORD_BASE + value
    return (_CHAR_SPACE if spaced else 0) | ord(body)


def _id_piece(token_id: int) -> str:
    """The piece of a built-in id; :class:`TokenizerError` if no piece has this id."""
    if token_id < 0 or token_id > MAX_BUILTIN_ID:
        raise TokenizerError(f"token id {token_id} is out of vocabulary")
    if token_id >= _WORD_BASE:
        value = token_id - _WORD_BASE
        prefix = " " if value & _WORD_SPACE else ""
        return prefix + _digits(value & (_WORD_SPACE - 1), 6, _WORD_CHARS, token_id)
    if token_id >= _SPACE_BASE:
        return _digits(token_id - _SPACE_BASE, 3, _SPACE_CHARS, token_id)
    code = token_id & (_CHAR_SPACE - 1)
    char = chr(code) if code <= 0x10FFFF else ""
    if not char or 0xD800 <= code < 0xE000:
        raise TokenizerError(f"token id {token_id} is out of vocabulary")
    return (" " if token_id & _CHAR_SPACE else "") + char


def _digits(value: int, bits: int, chars: dict[int, str], token_id: int) -> str:
    mask = (1 << bits) - 1
    out: list[str] = []
    while value:
        char = chars.get(value & mask)
        if char is None or len(out) >= MAX_WORD_PIECE:
            raise TokenizerError(f"token id {token_id} is out of vocabulary")
        out.append(char)
        value >>= bits
    if not out:
        raise TokenizerError(f"token id {token_id} is out of vocabulary")
    return "".join(out)


class BuiltinTokenizer:
    """The default tokenizer: a regular expression, no files, ids from the text itself."""

    name = "builtin"
    max_token_id = MAX_BUILTIN_ID

    def __init__(self, chat_template: str | None = None) -> None:
        self._counts: dict[str, int] = {}
        """Token counts of recent short texts: a load test sends the same prompt again and
        again, and matching the expression costs more than the rest of its counting."""
        self.template: ChatTemplate | None = None
        """The ``--chat-template``, if any; None renders the built-in format."""
        if chat_template is not None:
            from llmsim.engine.chat_template import ChatTemplate

            self.template = ChatTemplate(chat_template, {})

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [_piece_id(piece) for piece in _pieces(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(_id_piece(token_id) for token_id in ids)

    def count(self, text: str, add_special_tokens: bool = False) -> int:
        counts = self._counts
        count = counts.get(text)
        if count is None:
            count = len(_pieces(text))
            if len(text) <= COUNT_MEMO_CHARS:
                if len(counts) >= COUNT_MEMO_SIZE:
                    del counts[next(iter(counts))]  # the oldest
                counts[text] = count
        return count

    def split(self, text: str) -> list[str]:
        return _pieces(text)

    def token_strs(self, ids: Sequence[int]) -> list[str]:
        return [_id_piece(token_id) for token_id in ids]

    def info(self) -> dict[str, Any]:
        """No configuration files: its class, and the ``--chat-template`` if one is set."""
        info: dict[str, Any] = {"tokenizer_class": type(self).__name__}
        if self.template is not None:
            info["chat_template"] = self.template.source
        return info

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        **kwargs: Any,
    ) -> str:
        if self.template is not None:
            return self.template.render(messages, add_generation_prompt, **kwargs)
        return render_simple_chat(messages, add_generation_prompt)


def render_simple_chat(messages: Iterable[Mapping[str, Any]], add_generation_prompt: bool) -> str:
    """``<|role|>\\ncontent\\n`` per message, then the assistant header."""
    parts = [
        f"<|{message.get('role', '')}|>\n{message.get('content') or ''}\n" for message in messages
    ]
    if add_generation_prompt:
        parts.append(GENERATION_PROMPT)
    return "".join(parts)


BUILTIN = BuiltinTokenizer()


def tokenize(text: str) -> list[str]:
    """Split ``text`` into built-in tokens whose concatenation is ``text``."""
    return _pieces(text)


def count_tokens(text: str) -> int:
    """Number of built-in tokens in ``text`` (same as ``len(tokenize(text))``)."""
    return len(_pieces(text))


def token_ids(text: str) -> list[int]:
    """The built-in tokenizer's stable ids of ``text``."""
    return BUILTIN.encode(text)


def load_tokenizer(name: str | None, chat_template: str | None = None) -> Tokenizer:
    """The tokenizer ``--tokenizer`` names (built-in when None); cached per process.

    :class:`TokenizerError` says in one line why a tokenizer cannot be used.
    """
    key = (name, chat_template)
    cached = _LOADED.get(key)
    if cached is not None:
        return cached
    template = read_chat_template(chat_template) if chat_template is not None else None
    tokenizer: Tokenizer
    if name is None or name == "builtin":
        tokenizer = BUILTIN if template is None else BuiltinTokenizer(template)
    else:
        from llmsim.engine.hf_tokenizer import load_hf_tokenizer

        tokenizer = load_hf_tokenizer(name, template)
    _LOADED[key] = tokenizer
    return tokenizer


_LOADED: dict[tuple[str | None, str | None], Tokenizer] = {}


def read_chat_template(value: str) -> str:
    """``--chat-template``: a file's text, or the template itself (as vLLM accepts)."""
    from pathlib import Path

    path = Path(value).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        if any(marker in value for marker in ("{{", "{%", "\n")):
            return value
        raise TokenizerError(f"cannot read the chat template {value}: {exc.strerror}") from None
