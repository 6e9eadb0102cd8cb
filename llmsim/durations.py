"""Human-friendly durations: ``250ms``, ``1.5s``, ``750us``; bare numbers are milliseconds.

Bare numbers mean milliseconds because that is the unit the original Go simulator
used for its latency flags, so existing command lines keep working.
"""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
}
_DURATION_RE = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([a-zµ]*)\s*$")


def parse_duration(value: object) -> float:
    """Return seconds for a duration given as text or as a number of milliseconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 250ms, 1.5s or 750us")
    if isinstance(value, (int, float)):
        seconds = float(value) / 1000.0
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise ValueError("expected a duration such as 250ms, 1.5s or 750us")
    if not math.isfinite(seconds):
        raise ValueError("duration must be finite")
    if seconds < 0:
        raise ValueError("duration must not be negative")
    return seconds


def _parse_text(text: str) -> float:
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}: use a number with us, ms, s or m (e.g. 250ms)"
        )
    number, unit = match.groups()
    if unit == "":
        return float(number) / 1000.0
    if unit not in _UNIT_SECONDS:
        raise ValueError(f"invalid duration unit {unit!r} in {text!r}: use us, ms, s or m")
    return float(number) * _UNIT_SECONDS[unit]


def format_duration(seconds: float) -> str:
    """Render seconds the way a user would type them (``0ms``, ``200ms``, ``1.5s``)."""
    if seconds == 0:
        return "0ms"
    if seconds < 1e-3:
        return f"{_trim(seconds * 1e6)}us"
    if seconds < 1.0:
        return f"{_trim(seconds * 1e3)}ms"
    return f"{_trim(seconds)}s"


def _trim(number: float) -> str:
    text = f"{number:.6f}".rstrip("0").rstrip(".")
    return text or "0"
