"""Numbers that satisfy a schema's bounds and ``multipleOf``, always finite JSON numbers.

Bounds and steps come from clients: each must be a finite number within the range of a
double (what a JSON parser on the other side can hold), else the schema is refused
naming the keyword; a generated number is never ``NaN`` or ``Infinity``.
"""

from __future__ import annotations

import math
import random
import sys
from typing import Any

from llmsim.engine.structured.errors import UnsupportedSchemaError

_NUMERIC_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_LARGEST = sys.float_info.max
_MULTIPLE_SCAN = 1000
"""Whole numbers tried, from the lower bound up, when no multiple was drawn at random."""


def number_instance(schema: dict[str, Any], integer: bool, rng: random.Random) -> int | float:
    """A number within the bounds (and a multiple of ``multipleOf``) of ``schema``."""
    _check_numbers(schema)
    low, high = _bounds(schema, integer)
    step = schema.get("multipleOf")
    if step is not None and not isinstance(step, bool):
        if step <= 0:
            raise UnsupportedSchemaError("multipleOf", "'multipleOf' must be greater than 0")
        return _multiple(low, high, step, integer, rng)
    if integer:
        return rng.randint(math.ceil(low), math.floor(high))
    value = round(rng.uniform(low, high), 2)
    if math.isfinite(value) and low <= value <= high:
        return value
    return low / 2 + high / 2  # never overflows, unlike (low + high) / 2


def _check_numbers(schema: dict[str, Any]) -> None:
    """Every numeric keyword is a finite number a double can hold (booleans: draft 4)."""
    for keyword in _NUMERIC_KEYWORDS:
        value = schema.get(keyword)
        if value is None or isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)):
            raise UnsupportedSchemaError(keyword, f"'{keyword}' must be a number")
        if not (isinstance(value, int) or math.isfinite(value)) or abs(value) > _LARGEST:
            raise UnsupportedSchemaError(
                keyword, f"'{keyword}' is outside the range of a JSON number (a double)"
            )


def _bounds(schema: dict[str, Any], integer: bool) -> tuple[float, float]:
    """Inclusive bounds; exclusive ones (draft 4 booleans too) are pulled inwards."""
    low, low_open = _bound(schema, "minimum", "exclusiveMinimum", max)
    high, high_open = _bound(schema, "maximum", "exclusiveMaximum", min)
    if low is None and high is None:
        low, high = 0, 100
    elif low is None:
        assert high is not None
        low = 0 if high >= 0 else high - 100
    elif high is None:
        high = max(low, 0) + 100
    nudge = 1.0 if integer else min(0.01, (high - low) / 4 or 0.01)
    if low_open:
        low = math.floor(low) + 1 if integer else low + nudge
    if high_open:
        high = math.ceil(high) - 1 if integer else high - nudge
    if (integer and math.ceil(low) > math.floor(high)) or low > high:
        raise UnsupportedSchemaError("minimum", "the bounds minimum..maximum admit no value")
    return low, high


def _bound(
    schema: dict[str, Any], inclusive: str, exclusive: str, tighter: Any
) -> tuple[float | None, bool]:
    """The bound and whether it is exclusive (draft 4 booleans and draft 6+ numbers)."""
    value = schema.get(inclusive)
    flag = schema.get(exclusive)
    if isinstance(flag, bool):
        return value, flag and value is not None
    if isinstance(flag, (int, float)) and (value is None or tighter(value, flag) == flag):
        return flag, True
    return value, False


def _multiple(
    low: float, high: float, step: float, integer: bool, rng: random.Random
) -> int | float:
    """A multiple of ``step`` in ``low..high``, as a validator divides: ``value / step``."""
    first, last = _quotient(low, step, math.ceil), _quotient(high, step, math.floor)
    if first is not None and last is not None and first <= last:
        for _ in range(8):
            value = _scaled(rng.randint(first, last), step, integer)
            if value is None or (integer and not isinstance(value, int)):
                continue  # beyond a double, or a fraction an integer schema refuses
            if low <= value <= high and is_multiple(value, step):
                return value
    start = math.ceil(low)
    for whole in range(start, min(math.floor(high), start + _MULTIPLE_SCAN) + 1):
        if is_multiple(whole, step):
            return whole
    raise UnsupportedSchemaError(
        "multipleOf", f"no value within the bounds is a multiple of 'multipleOf' ({step!r})"
    )


def _quotient(bound: float, step: float, rounding: Any) -> int | None:
    """``rounding(bound / step)``, or None when the quotient is beyond a double."""
    try:
        quotient = bound / step
    except OverflowError:
        return None
    return int(rounding(quotient)) if math.isfinite(quotient) else None


def _scaled(k: int, step: float, integer: bool) -> int | float | None:
    """``k * step`` as the model would print it (rounded floats), or None if not finite."""
    try:
        value: int | float = k * step
    except OverflowError:
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = float(round(value, 12))
        if value.is_integer() and integer:
            value = int(value)
    return value


def is_multiple(value: float, step: float) -> bool:
    """Whether a validator sees ``value`` as a multiple of ``step`` (``value / step`` whole)."""
    if isinstance(value, int) and isinstance(step, int):
        return value % step == 0
    try:
        quotient = value / step
        return math.isfinite(quotient) and quotient == int(quotient)
    except (OverflowError, ValueError):
        return False
