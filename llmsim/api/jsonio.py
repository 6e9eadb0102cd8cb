"""JSON in and out: orjson when installed (``llmsim[fast]``), the standard library otherwise."""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - depends on the installed extras
    orjson = None


class JSONInputError(ValueError):
    """The body is not acceptable JSON."""


def _reject_constant(name: str) -> Any:
    raise JSONInputError(f"invalid JSON value {name}")


def loads(data: bytes) -> Any:
    """Parse a request body strictly: no NaN/Infinity, bounded nesting, UTF-8 only."""
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise JSONInputError(str(exc)) from None
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


if orjson is not None:

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value)  # type: ignore[no-any-return]

else:  # pragma: no cover - depends on the installed extras

    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
