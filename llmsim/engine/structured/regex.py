"""Strings that match a regular expression, generated from Python's own regex parser.

Walking the parse tree of :mod:`re` (``re._parser``, ``sre_parse`` before 3.11) keeps the
generator small and dependency-free, and it understands exactly the syntax a Python
client would check its output with. Unbounded repeats are kept short, as a model's
output would be. Lookarounds and other constructs a generator cannot honour raise
:class:`UnsupportedRegexError`, and so does a pattern over a limit of
:class:`~llmsim.engine.structured.budget.Limits` (its length, repetition counts, the steps
of its generation), before any of it blocks the caller.
"""

from __future__ import annotations

import importlib
import random
import re
import string
from typing import Any

from llmsim.engine.structured.budget import LIMITS, Limits, over

_parser: Any = importlib.import_module("re._parser" if hasattr(re, "_parser") else "sre_parse")
_constants: Any = importlib.import_module(
    "re._constants" if hasattr(re, "_constants") else "sre_constants"
)

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
_REPEATS = ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")


class UnsupportedRegexError(ValueError):
    """The pattern is invalid, over a limit, or uses a construct the generator cannot honour."""


class MatchBudgetError(UnsupportedRegexError):
    """A linear-time search over its ``max_match_steps``: the answer is unknown, not "no"."""


def _shown(pattern: str) -> str:
    """The pattern as an error message quotes it: the start of a long one."""
    return repr(pattern if len(pattern) <= 80 else pattern[:77] + "...")


def parse_pattern(pattern: str) -> Any:
    """Python's parse tree of ``pattern``; any parser failure is :class:`UnsupportedRegexError`."""
    try:
        return _parser.parse(pattern)
    except re.error as exc:
        raise UnsupportedRegexError(f"invalid regex {_shown(pattern)}: {exc}") from None
    except (OverflowError, RecursionError, ValueError, TypeError) as exc:
        raise UnsupportedRegexError(f"invalid regex {_shown(pattern)}: {exc}") from None


def regex_instance(pattern: str, rng: random.Random, limits: Limits = LIMITS) -> str:
    """A string that ``re.fullmatch(pattern, ...)`` accepts."""
    return RegexGenerator(rng, limits).instance(pattern)


class RegexGenerator:
    """Generates matches of several patterns under one shared step budget.

    Parse trees and character classes are cached, so a pattern used for a thousand
    strings of one schema is parsed once.
    """

    def __init__(self, rng: random.Random, limits: Limits = LIMITS) -> None:
        self.rng = rng
        self.limits = limits
        self.steps_left = limits.max_regex_steps
        self._trees: dict[str, Any] = {}
        self._classes: dict[int, tuple[Any, list[str]]] = {}

    def instance(self, pattern: str) -> str:
        tree = self._tree(pattern)
        try:
            return _Walker(self, pattern).sequence(tree)
        except UnsupportedRegexError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, RecursionError) as exc:
            raise UnsupportedRegexError(
                f"regex {_shown(pattern)} is not supported: {exc!r}"
            ) from None

    def _tree(self, pattern: str) -> Any:
        tree = self._trees.get(pattern)
        if tree is None:
            tree = parse_pattern(pattern)
            _check_static(tree, pattern, self.limits)
            self._trees[pattern] = tree
        return tree

    def charge(self, pattern: str, steps: int = 1) -> None:
        self.steps_left -= steps
        if self.steps_left < 0:
            limit = self.limits.max_regex_steps
            raise UnsupportedRegexError(
                f"regex {_shown(pattern)} takes too many steps to generate "
                f"{over('max_regex_steps', limit)}"
            )

    def char_class(self, items: Any) -> list[str]:
        """The characters a ``[...]`` class allows (printable ones when negated), cached."""
        cached = self._classes.get(id(items))
        if cached is None:
            cached = (items, _class_pool(items))  # keeps ``items`` alive: its id stays unique
            self._classes[id(items)] = cached
        return cached[1]


def _check_static(tree: Any, pattern: str, limits: Limits) -> None:
    """Refuse before generating: too long a minimum match, too large a repetition count,
    more steps than the budget even with every repetition at its minimum."""
    try:
        shortest = tree.getwidth()[0]
    except (OverflowError, RecursionError, ValueError) as exc:
        raise UnsupportedRegexError(f"regex {_shown(pattern)} is not supported: {exc}") from None
    if shortest > limits.max_chars:
        raise UnsupportedRegexError(
            f"regex {_shown(pattern)} needs at least {shortest} characters "
            f"{over('max_chars', limits.max_chars)}"
        )
    work, stack = 0, [(tree, 1)]
    while stack:
        items, times = stack.pop()
        for op, arg in items:
            work += times  # each node is visited at least ``times`` times
            name = str(op)
            if name in _REPEATS:
                if arg[0] > limits.max_repeat:
                    raise UnsupportedRegexError(
                        f"regex {_shown(pattern)} repeats {arg[0]} times "
                        f"{over('max_repeat', limits.max_repeat)}"
                    )
                work += times * arg[0]
                stack.append((arg[2], times * arg[0]))
            elif name == "SUBPATTERN":
                stack.append((arg[-1], times))
            elif name == "BRANCH":
                stack.extend((branch, times) for branch in arg[1])
            elif name == "ATOMIC_GROUP":
                stack.append((arg, times))
        if work > limits.max_regex_steps:
            raise UnsupportedRegexError(
                f"regex {_shown(pattern)} takes too many steps to generate "
                f"{over('max_regex_steps', limits.max_regex_steps)}"
            )


class _Walker:
    def __init__(self, owner: RegexGenerator, pattern: str) -> None:
        self.owner = owner
        self.rng = owner.rng
        self.pattern = pattern
        self.groups: dict[int, str] = {}
        self.length = 0

    def sequence(self, items: Any) -> str:
        text = "".join(self.node(op, arg) for op, arg in items)
        self.length += len(text)
        limit = self.owner.limits.max_chars
        if self.length > limit:
            raise UnsupportedRegexError(
                f"regex {_shown(self.pattern)} output would be too long {over('max_chars', limit)}"
            )
        return text

    def node(self, op: Any, arg: Any) -> str:
        name = str(op)
        self.owner.charge(self.pattern)
        if name == "LITERAL":
            return chr(arg)
        if name == "NOT_LITERAL":
            return self._pick([c for c in _PRINTABLE if ord(c) != arg])
        if name == "ANY":
            return self.rng.choice(_PRINTABLE)
        if name == "IN":
            return self._pick(self.owner.char_class(arg))
        if name == "BRANCH":
            return self.sequence(self.rng.choice(arg[1]))
        if name == "SUBPATTERN":
            group, body = arg[0], arg[-1]
            text = self.sequence(body)
            if group is not None:
                self.groups[group] = text
            return text
        if name in _REPEATS:
            return self._repeat(arg)
        if name == "AT":
            return ""  # anchors: the whole output is the match
        if name == "GROUPREF":
            return self.groups.get(arg, "")
        if name == "CATEGORY":
            return self.rng.choice(_CATEGORIES[str(arg)])
        if name == "ATOMIC_GROUP":
            return self.sequence(arg)
        raise UnsupportedRegexError(f"regex construct {name} is not supported")

    def _repeat(self, arg: Any) -> str:
        low, high, body = arg
        if high is _constants.MAXREPEAT or high > low + MAX_UNBOUNDED_REPEAT:
            high = low + MAX_UNBOUNDED_REPEAT
        count = self.rng.randint(low, high)
        if not body:  # other bodies are charged node by node
            self.owner.charge(self.pattern, count)
        return "".join(self.sequence(body) for _ in range(count))

    def _pick(self, pool: list[str]) -> str:
        if not pool:
            raise UnsupportedRegexError("regex character class matches nothing printable")
        return self.rng.choice(pool)


def _class_pool(items: Any) -> list[str]:
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
        return sorted(c for c in _PRINTABLE if c not in allowed)
    return sorted(allowed)
