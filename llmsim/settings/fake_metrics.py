"""Fake values for the ``vllm:`` series, so autoscalers and dashboards can be tested on cue.

A spec names series and what they report, each number a fixed value or a function of the
seconds since the spec was set: the scheduler gauges by their short names, the LoRA adapter
lists of ``vllm:lora_requests_info``, and any ``vllm:`` series by its name::

    {"num_requests_waiting": 12,
     "kv_cache_usage_perc": {"square": {"start": 0.2, "end": 0.9, "period": "10s"}},
     "loras": {"running": ["a"], "waiting": ["b"]},
     "vllm:request_success_total": {"labels": {"finished_reason": "stop"}, "rate": 20},
     "vllm:time_to_first_token_seconds": {"rate": 20, "quantiles": {"p90": 0.5}}}

The observability layer samples the spec at scrape time; series the spec leaves out keep
their live values. Nothing here knows about HTTP or Prometheus.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from llmsim.settings.fake_entries import MAX_ENTRIES, SeriesFake, describe_entries, entries_form
from llmsim.settings.fake_signals import (
    AnySignal,
    Fixed,
    Oscillate,
    Ramp,
    Schedule,
    Signal,
    Square,
    Strict,
    plain_number,
    spec_error,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

MAX_COUNT = 1_000_000_000
GAUGE_RANGES: dict[str, tuple[float, float]] = {
    "num_requests_running": (0.0, MAX_COUNT),
    "num_requests_waiting": (0.0, MAX_COUNT),
    "kv_cache_usage_perc": (0.0, 1.0),
}
"""The scheduler gauges (short names), with the values each accepts."""
SHORT_NAMES = {name: f"vllm:{name}" for name in GAUGE_RANGES}
"""The short keys of the scheduler gauges and the series they stand for."""
COUNT_GAUGES = frozenset({"vllm:num_requests_running", "vllm:num_requests_waiting"})
"""Sequence counts are whole numbers, as in vLLM: their samples are rounded."""


class FakeMetricsError(ValueError):
    """A spec could not be read or is invalid; ``param`` is the dotted path of the culprit."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _adapter_name(name: str) -> str:
    if not name:
        raise ValueError("adapter names must not be empty")
    if "," in name:
        raise ValueError(f"adapter name {name!r} contains a comma")
    return name


AdapterName = Annotated[str, AfterValidator(_adapter_name)]


class LoraOverride(Strict):
    """The adapter lists reported in ``vllm:lora_requests_info``'s labels."""

    running: list[AdapterName] = Field(default_factory=list)
    waiting: list[AdapterName] = Field(default_factory=list)


class FakeMetrics(Strict):
    """A complete override: every series it leaves out (or sets to null) stays live.

    ``series`` holds the ``vllm:``-named keys of the user's spec, one entry per label set.
    """

    num_requests_running: Signal | None = None
    num_requests_waiting: Signal | None = None
    kv_cache_usage_perc: Signal | None = None
    loras: LoraOverride | None = None
    series: dict[str, tuple[SeriesFake, ...]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _gather_series(cls, data: Any) -> Any:
        """Move the ``vllm:`` keys of the user's form under ``series``."""
        if not isinstance(data, Mapping):
            return data
        if "series" in data:
            raise _error("unknown key", "series")
        plain = {key: value for key, value in data.items() if not str(key).startswith("vllm:")}
        named = {key: entries_form(value) for key, value in data.items() if key not in plain}
        if named:
            plain["series"] = {**dict(plain.get("series") or {}), **named}
        return plain

    @model_validator(mode="after")
    def _values_in_range(self) -> FakeMetrics:
        for short, full in SHORT_NAMES.items():
            if getattr(self, short) is not None and full in self.series:
                raise _error(f"{short} and {full} name the same series: give one", short)
        for name, entries in self.gauge_entries():
            low, high = GAUGE_RANGES[name.removeprefix("vllm:")]
            for entry in entries:
                signal = entry.value
                if signal is not None and not all(low <= v <= high for v in signal.bounds()):
                    raise _error(f"values must be between {low:g} and {high:.12g}", name)
        if sum(len(entries) for entries in self.series.values()) > MAX_ENTRIES:
            raise _error(f"at most {MAX_ENTRIES} label sets in one spec")
        return self

    def gauge_entries(self) -> list[tuple[str, tuple[SeriesFake, ...]]]:
        """The scheduler gauges' entries, by their short or full key (for range checks)."""
        found = []
        for short, full in SHORT_NAMES.items():
            entries = self.series.get(full)
            if entries is not None:
                found.append((full, entries))
            elif getattr(self, short) is not None:
                found.append((short, (SeriesFake(value=getattr(self, short)),)))
        return found

    def all_series(self) -> dict[str, tuple[SeriesFake, ...]]:
        """Every faked series by its ``vllm:`` name, the short gauge keys included."""
        merged = dict(self.series)
        for short, full in SHORT_NAMES.items():
            signal = getattr(self, short)
            if signal is not None:
                merged[full] = (SeriesFake(value=signal),)
        return merged

    @property
    def is_empty(self) -> bool:
        return not self.series and all(
            getattr(self, name) is None for name in (*GAUGE_RANGES, "loras")
        )

    def sample(self, name: str, elapsed: float) -> float | None:
        """The value of scheduler gauge ``name`` (a short key) ``elapsed`` seconds after the
        spec was set, or None when the spec does not give it by that key."""
        signal: AnySignal | None = getattr(self, name)
        if signal is None:
            return None
        value = signal.at(elapsed)
        return float(round(value)) if SHORT_NAMES[name] in COUNT_GAUGES else value

    def describe(self) -> dict[str, Any]:
        """The spec in the form a user writes it (periods as durations, nulls left out)."""
        described: dict[str, Any] = {}
        for name in GAUGE_RANGES:
            signal = getattr(self, name)
            if signal is not None:
                described[name] = signal.describe()
        if self.loras is not None:
            described["loras"] = self.loras.model_dump()
        for name, entries in self.series.items():
            described[name] = describe_entries(entries)
        return described


def _error(reason: str, name: str | None = None) -> PydanticCustomError:
    return spec_error(reason, name)


# -- reading specs ------------------------------------------------------------------


def parse_spec(data: Any) -> FakeMetrics:
    """Validate parsed JSON or TOML data; raise :class:`FakeMetricsError` with every problem."""
    if isinstance(data, FakeMetrics):
        return data
    if not isinstance(data, Mapping):
        raise FakeMetricsError("a metrics override must be an object (JSON) or a table (TOML)")
    try:
        return FakeMetrics.model_validate(dict(data))
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors(include_url=False)]
        single = [key for key, value in data.items() if not isinstance(value, list)]
        problems = [(_unlisted(path, single), reason) for path, reason in problems]
        raise FakeMetricsError(
            "; ".join(f"{path}: {reason}" if path else reason for path, reason in problems),
            problems[0][0] or None,
        ) from None


def _unlisted(path: str, single: list[str]) -> str:
    """``vllm:x.rate`` rather than ``vllm:x[0].rate`` when the user gave one entry."""
    for key in single:
        if path.startswith(f"{key}[0]"):
            return key + path[len(key) + 3 :]
    return path


def _describe(error: Any) -> tuple[str, str]:
    ctx = error.get("ctx") or {}
    path = ""
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "series" and not path:
            continue  # the user wrote these keys at the top level
        elif part not in ("function-after", "function-before"):
            path += f".{part}" if path else str(part)
    if error["type"] == "extra_forbidden":
        return path, "unknown key"
    if error["type"] == "spec":
        return ctx.get("name") or path, str(ctx["reason"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return path, message[:1].lower() + message[1:]


def read_spec_source(source: str) -> Any:
    """Parse inline JSON (text starting with ``{``) or a JSON or TOML file (by ``.toml``)."""
    text = source.strip()
    if text.startswith("{"):
        return _json(text, "invalid JSON")
    path = Path(text)
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FakeMetricsError(f"file not found: {path} (give a file or inline JSON)") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise FakeMetricsError(f"cannot read {path}: {reason}") from None
    if path.suffix.lower() == ".toml":
        try:
            return tomllib.loads(content)
        except tomllib.TOMLDecodeError as exc:
            raise FakeMetricsError(f"{path} is not valid TOML: {exc}") from None
    return _json(content, f"{path} is not valid JSON")


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise FakeMetricsError(
            f"{what}: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise FakeMetricsError(f"{what}: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def load_spec(value: Any) -> FakeMetrics:
    """A spec from a path, inline JSON, parsed data or an existing spec."""
    return parse_spec(read_spec_source(value) if isinstance(value, str) else value)


__all__ = [
    "COUNT_GAUGES",
    "GAUGE_RANGES",
    "FakeMetrics",
    "FakeMetricsError",
    "Fixed",
    "LoraOverride",
    "Oscillate",
    "Ramp",
    "Schedule",
    "SeriesFake",
    "Square",
    "load_spec",
    "parse_spec",
    "plain_number",
    "read_spec_source",
]
