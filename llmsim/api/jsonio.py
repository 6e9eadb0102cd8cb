"""JSON in and out: orjson when installed (``llmsim[fast]``), the standard library otherwise."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


class JSONInputError(ValueError):
    """The body is not acceptable JSON."""


def _reject_constant(name: str) -> Any:
    raise JSONInputError(f"invalid JSON value {name}")


def loads_stdlib(data: bytes) -> Any:
    """Parse a request body strictly: no NaN/Infinity, bounded nesting, UTF-8 only."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise JSONInputError("body is not valid UTF-8") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise JSONInputError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise JSONInputError("JSON nested too deeply") from None


def dumps_stdlib(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _pick() -> tuple[str, Callable[[bytes], Any], Callable[[Any], bytes]]:
    try:
        import orjson
    except ImportError:
        return "json", loads_stdlib, dumps_stdlib

    def loads_orjson(data: bytes) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise JSONInputError(str(exc)) from None

    return "orjson", loads_orjson, orjson.dumps


BACKEND, loads, dumps = _pick()
"""The JSON implementation in use, chosen once at import."""
