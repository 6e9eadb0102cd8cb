"""Human-friendly units: durations (``250ms``, ``1.5s``, bare milliseconds) and sizes (``4MiB``).

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
MAX_DURATION = 3600.0
"""Longest duration a setting or a rule may take, in seconds: an hour is far beyond any
real latency, and a bound keeps a typo from holding requests (and shutdown) for good."""
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


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object) -> int:
    """Return bytes for ``4MiB``, ``512KiB``, ``1MB`` or a bare number of bytes."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("expected a size such as 4MiB, 512KiB or a number of bytes")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE_RE.match(value)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError(
                f"invalid size {value!r}: use a number with KiB, MiB, GiB, KB, MB or GB"
            )
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 0:
        raise ValueError("size must not be negative")
    return size


def format_size(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)
