"""JSON in and out: orjson when installed (``llmsim[fast]``), the standard library otherwise."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from itertools import compress
from typing import Any

MAX_NESTING = 128
"""Deepest nesting of arrays and objects a request body may have. Real bodies stay under 30
levels; deeper ones could not be written back (orjson stops at 255 levels) or walked by the
recursive code that renders prompts and tool schemas."""


class JSONInputError(ValueError):
    """The body is not acceptable JSON."""


def _reject_constant(name: str) -> Any:
    raise JSONInputError(f"invalid JSON value {name}")


def _finite_float(text: str) -> float:
    """A float literal, refused when it is beyond float range (``1e400``) as orjson does."""
    value = float(text)
    if math.isinf(value):
        raise JSONInputError(f"number {text[:40]} is out of range")
    return value


def loads_stdlib(data: bytes | str) -> Any:
    """Parse a request body strictly: no NaN/Infinity, bounded nesting, UTF-8 only."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise JSONInputError("body is not valid UTF-8") from None
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise JSONInputError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise JSONInputError("JSON nested too deeply") from None
    except JSONInputError:
        raise
    except ValueError:  # an integer literal beyond Python's digit limit (4300 digits)
        raise JSONInputError("an integer literal is too long") from None


def dumps_stdlib(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def nested_deeper_than(value: Any, limit: int) -> bool:
    """True if ``value`` nests arrays and objects more than ``limit`` levels deep.

    Walked without recursion, so any parsed value can be checked.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if type(item) is dict else item
        # The containers among the children, picked in C: a list of a million numbers is
        # passed over without a Python step per number.
        nested = list(compress(children, map(_CONTAINERS.__contains__, map(type, children))))
        if nested:
            if depth >= limit:
                return True
            stack.extend((child, depth + 1) for child in nested)
    return False


_CONTAINERS = frozenset({dict, list})


def may_nest_deeper_than(data: bytes | str, limit: int) -> bool:
    """False when the text has too few brackets to nest ``limit`` levels: a C-speed count
    that spares nearly every body the walk of :func:`nested_deeper_than`."""
    if isinstance(data, str):
        return data.count("[") + data.count("{") > limit
    return data.count(b"[") + data.count(b"{") > limit


def loads_bounded(data: bytes | str) -> Any:
    """:data:`loads`, refusing values nested more than :data:`MAX_NESTING` levels deep."""
    value = loads(data)
    if (
        isinstance(value, (dict, list))
        and may_nest_deeper_than(data, MAX_NESTING)
        and nested_deeper_than(value, MAX_NESTING)
    ):
        raise JSONInputError(f"nested more than {MAX_NESTING} levels deep")
    return value


def _pick() -> tuple[str, Callable[[bytes | str], Any], Callable[[Any], bytes]]:
    try:
        import orjson
    except ImportError:
        return "json", loads_stdlib, dumps_stdlib

    def loads_orjson(data: bytes | str) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise JSONInputError(str(exc)) from None

    return "orjson", loads_orjson, orjson.dumps


BACKEND, loads, dumps = _pick()
"""The JSON implementation in use, chosen once at import."""
