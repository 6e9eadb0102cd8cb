"""Strings that match a regular expression, generated from Python's own regex parser.

Walking the parse tree of :mod:`re` (``re._parser``, ``sre_parse`` before 3.11) keeps the
generator small and dependency-free, and it understands exactly the syntax a Python
client would check its output with. Unbounded repeats are kept short, as a model's
output would be. Lookarounds and other constructs a generator cannot honour raise
:class:`UnsupportedRegexError`.
"""

from __future__ import annotations

import importlib
import random
import re
import string
from typing import Any

_parser: Any = importlib.import_module("re._parser" if hasattr(re, "_parser") else "sre_parse")
_constants: Any = importlib.import_module(
    "re._constants" if hasattr(re, "_constants") else "sre_constants"
)

MAX_LENGTH = 100_000
"""Longest output generated; a pattern that needs more is refused."""
MAX_UNBOUNDED_REPEAT = 4
"""Extra repetitions beyond the minimum for ``*``, ``+`` and ``{n,}``."""
_PRINTABLE = string.ascii_letters + string.digits + " .,-_"
_CATEGORIES: dict[str, str] = {
    "CATEGORY_DIGIT": string.digits,
    "CATEGORY_NOT_DIGIT": string.ascii_letters + " -_",
    "CATEGORY_SPACE": " ",
    "CATEGORY_NOT_SPACE": string.ascii_letters + string.digits,
    "CATEGORY_WORD": string.ascii_letters + string.digits + "_",
    "CATEGORY_NOT_WORD": " .,-!?",
}


class UnsupportedRegexError(ValueError):
    """The pattern is invalid or uses a construct the generator cannot honour."""


def regex_instance(pattern: str, rng: random.Random) -> str:
    """A string that ``re.fullmatch(pattern, ...)`` accepts."""
    try:
        tree = _parser.parse(pattern)
    except re.error as exc:
        raise UnsupportedRegexError(f"invalid regex {pattern!r}: {exc}") from None
    try:
        return _Walker(rng).sequence(tree)
    except (KeyError, IndexError, TypeError, ValueError, RecursionError) as exc:
        if isinstance(exc, UnsupportedRegexError):
            raise
        raise UnsupportedRegexError(f"regex {pattern!r} is not supported: {exc!r}") from None


class _Walker:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.groups: dict[int, str] = {}
        self.length = 0

    def sequence(self, items: Any) -> str:
        text = "".join(self.node(op, arg) for op, arg in items)
        self.length += len(text)
        if self.length > MAX_LENGTH:
            raise UnsupportedRegexError(f"regex output would exceed {MAX_LENGTH} characters")
        return text

    def node(self, op: Any, arg: Any) -> str:
        name = str(op)
        if name == "LITERAL":
            return chr(arg)
        if name == "NOT_LITERAL":
            return self._pick(c for c in _PRINTABLE if ord(c) != arg)
        if name == "ANY":
            return self.rng.choice(_PRINTABLE)
        if name == "IN":
            return self._char_class(arg)
        if name == "BRANCH":
            return self.sequence(self.rng.choice(arg[1]))
        if name == "SUBPATTERN":
            group, body = arg[0], arg[-1]
            text = self.sequence(body)
            if group is not None:
                self.groups[group] = text
            return text
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, body = arg
            if high is _constants.MAXREPEAT or high > low + MAX_UNBOUNDED_REPEAT:
                high = low + MAX_UNBOUNDED_REPEAT
            return "".join(self.sequence(body) for _ in range(self.rng.randint(low, high)))
        if name == "AT":
            return ""  # anchors: the whole output is the match
        if name == "GROUPREF":
            return self.groups.get(arg, "")
        if name == "CATEGORY":
            return self.rng.choice(_CATEGORIES[str(arg)])
        if name == "ATOMIC_GROUP":
            return self.sequence(arg)
        raise UnsupportedRegexError(f"regex construct {name} is not supported")

    def _char_class(self, items: Any) -> str:
        negate = bool(items) and str(items[0][0]) == "NEGATE"
        allowed: set[str] = set()
        for op, arg in items[1:] if negate else items:
            name = str(op)
            if name == "LITERAL":
                allowed.add(chr(arg))
            elif name == "RANGE":
                low, high = arg
                allowed.update(chr(code) for code in range(low, min(high, low + 255) + 1))
            elif name == "CATEGORY":
                allowed.update(_CATEGORIES[str(arg)])
            else:
                raise UnsupportedRegexError(f"regex construct {name} is not supported")
        if negate:
            return self._pick(c for c in _PRINTABLE if c not in allowed)
        return self.rng.choice(sorted(allowed))

    def _pick(self, candidates: Any) -> str:
        pool = sorted(candidates)
        if not pool:
            raise UnsupportedRegexError("regex character class matches nothing printable")
        return str(self.rng.choice(pool))
