"""Pattern matching in linear time: a Pike VM over Python's own regex parse tree.

Python's :mod:`re` backtracks, so a pattern such as ``^(a+)+b$`` takes exponential time on
``"aaaa…"``. Patterns written by clients (a tool schema's ``pattern``) and the text they
are matched against cannot be trusted with it. This matcher simulates all paths at once
(Thompson's construction run as a Pike VM, as RE2 does): time is proportional to the
length of the text times the size of the pattern, and captures follow the same
leftmost-first preference as :mod:`re`. Backreferences, lookarounds, atomic groups and
possessive repeats have no such simulation and raise :class:`UnsupportedRegexError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmsim.engine.structured.budget import LIMITS, Limits, over
from llmsim.engine.structured.regex import MatchBudgetError, UnsupportedRegexError, parse_pattern

_CHAR, _SPLIT, _JMP, _SAVE, _ASSERT, _MATCH, _LOOP = range(7)
_MAXREPEAT = parse_pattern("a*")[0][1][1]
_UNLINEAR = frozenset(
    ("GROUPREF", "GROUPREF_EXISTS", "ASSERT", "ASSERT_NOT", "ATOMIC_GROUP", "POSSESSIVE_REPEAT")
)
_FOLDED_ELSEWHERE = frozenset("iks")
Predicate = Callable[[str], bool]


@dataclass(slots=True)
class MatchMeter:
    """Steps left to a group of searches (one request's), so that many patterns or many
    values cannot multiply ``max_match_steps``."""

    left: int = LIMITS.max_match_steps


@dataclass(frozen=True, slots=True)
class LinearMatch:
    """What :meth:`LinearPattern.search` found: the text and each group's span."""

    text: str
    spans: tuple[int, ...]

    def span(self, index: int = 0) -> tuple[int, int]:
        return self.spans[2 * index], self.spans[2 * index + 1]

    def group(self, index: int = 0) -> str | None:
        if not 0 <= index < len(self.spans) // 2:
            raise IndexError("no such group")
        start, end = self.span(index)
        return None if start < 0 or end < 0 else self.text[start:end]


class LinearPattern:
    """A compiled pattern whose :meth:`search` runs in time linear in the text."""

    def __init__(self, pattern: str, limits: Limits = LIMITS) -> None:
        tree = parse_pattern(pattern)
        self.groups = int(tree.state.groups) - 1
        compiler = _Compiler(pattern, limits, 2 * self.groups + 2)
        compiler.emit(_SAVE, 0)
        compiler.sequence(tree, int(tree.state.flags))
        compiler.emit(_SAVE, 1)
        compiler.emit(_MATCH)
        self._program = [tuple(instruction) for instruction in compiler.program]
        self._budget = limits.max_match_steps
        self._slots = compiler.slots
        # A step copies the thread's slots: one loop per instruction costs program x slots.
        self._weight = 1 + self._slots // 8
        if self.cost > limits.max_pattern_program:
            limit = over("max_pattern_program", limits.max_pattern_program)
            raise UnsupportedRegexError(f"pattern is too large to check {limit}")
        flags = int(tree.state.flags)
        self._anchored = _anchored(tree, flags)
        firsts = _first_chars(tree, flags)
        # A one-character class cannot backtrack: ``re`` finds where a match may start.
        self._skip = re.compile(f"[{re.escape(''.join(sorted(firsts)))}]") if firsts else None

    @property
    def cost(self) -> int:
        """The most steps one character of text may take: every state live."""
        return len(self._program) * self._weight

    def search(self, text: str, meter: MatchMeter | None = None) -> LinearMatch | None:
        """The leftmost match, preferring what :func:`re.search` prefers, or None.

        Raises :class:`MatchBudgetError` once the steps taken pass ``max_match_steps``, or
        what is left of ``meter`` when searches share one.
        """
        return self._search(text, MatchMeter(self._budget) if meter is None else meter)

    def _search(self, text: str, meter: MatchMeter) -> LinearMatch | None:
        program, size, budget, weight = self._program, len(text), meter.left, self._weight
        empty = (-1,) * self._slots
        threads: list[tuple[int, tuple[int, ...]]] = []
        seen: set[int] = set()
        found: tuple[int, ...] | None = None
        position = 0
        while position <= size:
            if found is None:
                if not threads:
                    position = self._next_start(text, position)
                    if position < 0:
                        break
                self._follow(threads, seen, 0, empty, position, text)
            char = text[position] if position < size else ""
            following: list[tuple[int, tuple[int, ...]]] = []
            following_seen: set[int] = set()
            for pc, spans in threads:
                instruction = program[pc]
                if instruction[0] == _MATCH:
                    found = spans
                    break  # the threads after this one are less preferred
                if char and instruction[1](char):
                    self._follow(following, following_seen, pc + 1, spans, position + 1, text)
            threads, seen = following, following_seen
            budget -= (len(seen) + 1) * weight
            if budget < 0:
                meter.left = 0
                raise MatchBudgetError(f"the search {over('max_match_steps', self._budget)}")
            if found is not None and not threads:
                break
            position += 1
        meter.left = budget
        return None if found is None else LinearMatch(text, found[: 2 * self.groups + 2])

    def _next_start(self, text: str, position: int) -> int:
        """Where the next match may start (-1 for nowhere), when no thread is running."""
        if self._anchored and position > 0:
            return -1
        if self._skip is None:
            return position
        found = self._skip.search(text, position)
        return -1 if found is None else found.start()

    def _follow(
        self,
        threads: list[tuple[int, tuple[int, ...]]],
        seen: set[int],
        pc: int,
        spans: tuple[int, ...],
        position: int,
        text: str,
    ) -> None:
        """Add the threads reachable from ``pc`` without reading, most preferred first."""
        program = self._program
        stack = [(pc, spans)]
        while stack:
            pc, spans = stack.pop()
            if pc in seen:
                continue
            seen.add(pc)
            instruction = program[pc]
            kind = instruction[0]
            if kind == _JMP:
                stack.append((instruction[1], spans))
            elif kind == _SPLIT:
                stack.append((instruction[2], spans))
                stack.append((instruction[1], spans))
            elif kind == _SAVE:
                slot = instruction[1]
                stack.append((pc + 1, (*spans[:slot], position, *spans[slot + 1 :])))
            elif kind == _ASSERT:
                if instruction[1](text, position):
                    stack.append((pc + 1, spans))
            elif kind == _LOOP:  # an empty iteration ends the loop, as in ``re``
                empty = spans[instruction[1]] == position
                stack.append((pc + 1 if empty else instruction[2], spans))
            else:
                threads.append((pc, spans))


class _Compiler:
    """Thompson's construction over the parse tree, into a flat instruction list."""

    def __init__(self, pattern: str, limits: Limits, slots: int) -> None:
        self.pattern = pattern
        self.limits = limits
        self.program: list[list[Any]] = []
        self.slots = slots
        """Group spans, then one slot per unbounded loop: where its iteration began."""

    def emit(self, kind: int, first: Any = None, second: Any = None) -> int:
        if len(self.program) >= self.limits.max_pattern_program:
            raise UnsupportedRegexError(
                f"pattern is too large to check "
                f"{over('max_pattern_program', self.limits.max_pattern_program)}"
            )
        self.program.append([kind, first, second])
        return len(self.program) - 1

    def sequence(self, items: Any, flags: int) -> None:
        for op, arg in items:
            self.node(str(op), arg, flags)

    def node(self, name: str, arg: Any, flags: int) -> None:
        if name in _UNLINEAR:
            raise UnsupportedRegexError(f"regex construct {name} cannot be checked in linear time")
        if name == "SUBPATTERN":
            group, add, remove, body = arg
            inner = (flags | add) & ~remove
            if group is not None:
                self.emit(_SAVE, 2 * group)
            self.sequence(body, inner)
            if group is not None:
                self.emit(_SAVE, 2 * group + 1)
        elif name == "BRANCH":
            self._branch(arg[1], flags)
        elif name in ("MAX_REPEAT", "MIN_REPEAT"):
            self._repeat(arg, flags, greedy=name == "MAX_REPEAT")
        elif name == "AT":
            self.emit(_ASSERT, _anchor(str(arg), flags))
        else:
            self.emit(_CHAR, _predicate(name, arg, flags))

    def _branch(self, alternatives: Any, flags: int) -> None:
        exits: list[int] = []
        for index, alternative in enumerate(alternatives):
            last = index == len(alternatives) - 1
            split = -1 if last else self.emit(_SPLIT, len(self.program) + 1)
            self.sequence(alternative, flags)
            if not last:
                exits.append(self.emit(_JMP))
                self.program[split][2] = len(self.program)
        for jump in exits:
            self.program[jump][1] = len(self.program)

    def _repeat(self, arg: Any, flags: int, greedy: bool) -> None:
        low, high, body = arg
        for _ in range(low):
            self.sequence(body, flags)
        if high is _MAXREPEAT:
            start, self.slots = self.slots, self.slots + 1
            loop = self._optional(body, flags, greedy, start)
            self.emit(_LOOP, start, loop)
            self._close(loop)
            return
        splits = [self._optional(body, flags, greedy) for _ in range(high - low)]
        for split in splits:
            self._close(split)

    def _optional(self, body: Any, flags: int, greedy: bool, start: int = -1) -> int:
        """A split between ``body`` (preferred when greedy) and what follows (patched later);
        ``start`` is the slot recording where the body began, for loops."""
        split = self.emit(_SPLIT)
        self.program[split][1 if greedy else 2] = split + 1
        if start >= 0:
            self.emit(_SAVE, start)
        self.sequence(body, flags)
        return split

    def _close(self, split: int) -> None:
        instruction = self.program[split]
        instruction[2 if instruction[1] is not None else 1] = len(self.program)


def _anchored(tree: Any, flags: int) -> bool:
    """Whether every match starts at the beginning of the text (``^`` without MULTILINE)."""
    if not len(tree) or str(tree[0][0]) != "AT":
        return False
    anchor = str(tree[0][1])
    return anchor == "AT_BEGINNING_STRING" or (
        anchor == "AT_BEGINNING" and not flags & re.MULTILINE
    )


def _first_chars(items: Any, flags: int) -> set[str]:
    """The characters every match must start with, when the pattern begins with literals
    (``(?i)weather``, ``(hi|hello)``); an empty set when it cannot tell."""
    if not len(items):
        return set()
    op, arg = items[0]
    name = str(op)
    if name == "LITERAL":
        char = chr(arg)
        if flags & re.IGNORECASE:
            if char.lower() in _FOLDED_ELSEWHERE or not char.isascii():
                return set()  # also matched by other letters (``ſ``, the Kelvin sign, ``ϑ``...)
            return {char, char.lower(), char.upper()}
        return {char}
    if name == "SUBPATTERN":
        return _first_chars(arg[3], (flags | arg[1]) & ~arg[2])
    if name == "BRANCH":
        chars: set[str] = set()
        for alternative in arg[1]:
            first = _first_chars(alternative, flags)
            if not first:
                return set()
            chars |= first
        return chars
    return set()


def _predicate(name: str, arg: Any, flags: int) -> Predicate:
    """Whether one character matches a one-character node (``a``, ``.``, ``[^a-z]``)."""
    fold = bool(flags & re.IGNORECASE)
    if name == "LITERAL":
        return _literal(chr(arg), fold)
    if name == "NOT_LITERAL":
        same = _literal(chr(arg), fold)
        return lambda char: not same(char)
    if name == "ANY":
        return (lambda char: True) if flags & re.DOTALL else (lambda char: char != "\n")
    if name == "IN":
        return _char_class(arg, flags)
    if name == "CATEGORY":
        return _category(str(arg), flags)
    raise UnsupportedRegexError(f"regex construct {name} cannot be checked in linear time")


def _literal(expected: str, fold: bool) -> Predicate:
    if not fold:
        return lambda char: char == expected
    lower, upper = expected.lower(), expected.upper()
    return lambda char: char.lower() == lower or char.upper() == upper


def _char_class(items: Any, flags: int) -> Predicate:
    negate = bool(items) and str(items[0][0]) == "NEGATE"
    tests: list[Predicate] = []
    for op, arg in items[1:] if negate else items:
        name = str(op)
        if name == "RANGE":
            tests.append(_range(arg[0], arg[1], bool(flags & re.IGNORECASE)))
        else:
            tests.append(_predicate(name, arg, flags))
    if negate:
        return lambda char: not any(test(char) for test in tests)
    return lambda char: any(test(char) for test in tests)


def _range(low: int, high: int, fold: bool) -> Predicate:
    if not fold:
        return lambda char: low <= ord(char) <= high
    return lambda char: any(low <= ord(c) <= high for c in (char, char.lower(), char.upper()))


def _category(name: str, flags: int) -> Predicate:
    ascii_only = bool(flags & re.ASCII)
    base: dict[str, Predicate] = {
        "DIGIT": str.isdecimal,
        "SPACE": str.isspace,
        "WORD": lambda char: char.isalnum() or char == "_",
    }
    kind = name.removeprefix("CATEGORY_").removeprefix("NOT_")
    if kind not in base:
        raise UnsupportedRegexError(f"regex category {name} cannot be checked in linear time")
    test = base[kind]
    if ascii_only:
        unbounded = test
        test = lambda char: char.isascii() and unbounded(char)  # noqa: E731
    if "_NOT_" in name:
        return lambda char: not test(char)
    return test


def _anchor(name: str, flags: int) -> Callable[[str, int], bool]:
    """Whether an anchor (``^``, ``$``, ``\\b``...) holds at a position of the text."""
    multiline = bool(flags & re.MULTILINE)
    word = _category("CATEGORY_WORD", flags)

    def boundary(text: str, at: int) -> bool:
        before = at > 0 and word(text[at - 1])
        after = at < len(text) and word(text[at])
        return before != after

    anchors: dict[str, Callable[[str, int], bool]] = {
        "AT_BEGINNING": lambda text, at: at == 0 or (multiline and text[at - 1] == "\n"),
        "AT_BEGINNING_STRING": lambda text, at: at == 0,
        "AT_END": lambda text, at: (
            at == len(text)
            or (at == len(text) - 1 and text[at] == "\n")
            or (multiline and text[at] == "\n")
        ),
        "AT_END_STRING": lambda text, at: at == len(text),
        "AT_BOUNDARY": boundary,
        "AT_NON_BOUNDARY": lambda text, at: bool(text) and not boundary(text, at),
    }
    if name not in anchors:
        raise UnsupportedRegexError(f"regex anchor {name} cannot be checked in linear time")
    return anchors[name]
