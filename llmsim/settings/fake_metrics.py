"""Pinned values for the scheduler gauges, so autoscalers and routers can be tested on cue.

A spec names some of ``num_requests_running``, ``num_requests_waiting``,
``kv_cache_usage_perc`` and the LoRA adapter lists of ``vllm:lora_requests_info``, each with
a fixed value or a time function of the seconds since the spec was set::

    {"num_requests_waiting": 12,
     "num_requests_running": {"ramp": {"start": 0, "end": 64, "period": "60s"}},
     "kv_cache_usage_perc": {"square": {"start": 0.2, "end": 0.9, "period": "10s"}},
     "loras": {"running": ["a"], "waiting": ["b"]}}

The metrics module asks for a value at scrape time; names the spec leaves out keep their
live values. Nothing here knows about HTTP or Prometheus.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from llmsim.settings.units import format_duration, parse_duration

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
"""The gauges a spec can pin, with the values each accepts."""
COUNT_GAUGES = frozenset({"num_requests_running", "num_requests_waiting"})
"""Sequence counts are whole numbers, as in vLLM: their samples are rounded."""

FUNCTION_NAMES = ("ramp", "oscillate", "square")
_SIGNAL_HINT = (
    'expected a number or one of {"ramp": {...}}, {"oscillate": {...}}, {"square": {...}}'
)


class FakeMetricsError(ValueError):
    """A spec could not be read or is invalid; ``param`` is the dotted path of the culprit."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


Period = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


def plain_number(number: float) -> float | int:
    """``12`` rather than ``12.0`` when showing a spec back to its author."""
    return int(number) if number.is_integer() else number


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Fixed(_Strict):
    """A constant value."""

    kind: Literal["fixed"] = "fixed"
    value: float

    def at(self, elapsed: float) -> float:
        return self.value

    def bounds(self) -> tuple[float, ...]:
        return (self.value,)

    def describe(self) -> Any:
        return plain_number(self.value)


class _Wave(_Strict):
    """A function of time going between ``start`` and ``end`` with ``period`` seconds."""

    kind: str
    start: float
    end: float
    period: Period

    def at(self, elapsed: float) -> float:
        raise NotImplementedError

    def bounds(self) -> tuple[float, ...]:
        return (self.start, self.end)

    def describe(self) -> Any:
        params = self.model_dump(exclude={"kind"})
        params.update(
            start=plain_number(self.start),
            end=plain_number(self.end),
            period=format_duration(self.period),
        )
        return {self.kind: params}

    def _phase(self, elapsed: float) -> float:
        """Position within the current period, from 0 (inclusive) to 1 (exclusive)."""
        return (max(elapsed, 0.0) % self.period) / self.period


class Ramp(_Wave):
    """Linear from ``start`` to ``end`` over one period, then holds ``end``.

    With ``repeat`` it starts again from ``start`` every period (a sawtooth).
    """

    kind: Literal["ramp"] = "ramp"
    repeat: bool = False

    def at(self, elapsed: float) -> float:
        elapsed = max(elapsed, 0.0)
        share = self._phase(elapsed) if self.repeat else min(elapsed / self.period, 1.0)
        return self.start + (self.end - self.start) * share

    def describe(self) -> Any:
        described = super().describe()
        if not self.repeat:
            del described[self.kind]["repeat"]
        return described


class Oscillate(_Wave):
    """A sine wave: ``start`` at time 0, ``end`` half a period later, ``start`` again."""

    kind: Literal["oscillate"] = "oscillate"

    def at(self, elapsed: float) -> float:
        swing = (1.0 - math.cos(2.0 * math.pi * self._phase(elapsed))) / 2.0
        return self.start + (self.end - self.start) * swing


class Square(_Wave):
    """``start`` for the first half of each period, ``end`` for the second half."""

    kind: Literal["square"] = "square"

    def at(self, elapsed: float) -> float:
        return self.start if self._phase(elapsed) < 0.5 else self.end


def _tag_signal(value: Any) -> Any:
    """Turn the user's form (``12`` or ``{"ramp": {...}}``) into a tagged one."""
    if isinstance(value, (Fixed, Ramp, Oscillate, Square)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"kind": "fixed", "value": value}
    if isinstance(value, Mapping) and len(value) == 1:
        ((name, params),) = value.items()
        if name in FUNCTION_NAMES and isinstance(params, Mapping) and "kind" not in params:
            return {**params, "kind": name}
        if name not in FUNCTION_NAMES:
            raise _error(f"unknown time function {name!r}: use ramp, oscillate or square")
    raise _error(_SIGNAL_HINT)


def _error(reason: str, name: str | None = None) -> PydanticCustomError:
    """An error whose text is used as given (pydantic would format braces in it)."""
    return PydanticCustomError("spec", "{reason}", {"reason": reason, "name": name})


Signal = Annotated[
    Union[Fixed, Ramp, Oscillate, Square],  # noqa: UP007 - a discriminated union needs Union
    Field(discriminator="kind"),
    BeforeValidator(_tag_signal),
]


def _adapter_name(name: str) -> str:
    if not name:
        raise ValueError("adapter names must not be empty")
    if "," in name:
        raise ValueError(f"adapter name {name!r} contains a comma")
    return name


AdapterName = Annotated[str, AfterValidator(_adapter_name)]


class LoraOverride(_Strict):
    """The adapter lists reported in ``vllm:lora_requests_info``'s labels."""

    running: list[AdapterName] = Field(default_factory=list)
    waiting: list[AdapterName] = Field(default_factory=list)


class FakeMetrics(_Strict):
    """A complete override: every name it leaves out (or sets to null) stays live."""

    num_requests_running: Signal | None = None
    num_requests_waiting: Signal | None = None
    kv_cache_usage_perc: Signal | None = None
    loras: LoraOverride | None = None

    @model_validator(mode="after")
    def _values_in_range(self) -> FakeMetrics:
        for name, (low, high) in GAUGE_RANGES.items():
            signal = getattr(self, name)
            if signal is not None and not all(low <= v <= high for v in signal.bounds()):
                raise _error(f"values must be between {low:g} and {high:.12g}", name)
        return self

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in type(self).model_fields)

    def sample(self, name: str, elapsed: float) -> float | None:
        """The pinned value of gauge ``name`` ``elapsed`` seconds after the spec was set."""
        signal: Fixed | Ramp | Oscillate | Square | None = getattr(self, name)
        if signal is None:
            return None
        value = signal.at(elapsed)
        return float(round(value)) if name in COUNT_GAUGES else value

    def describe(self) -> dict[str, Any]:
        """The spec in the form a user writes it (periods as durations, nulls left out)."""
        described: dict[str, Any] = {}
        for name in GAUGE_RANGES:
            signal = getattr(self, name)
            if signal is not None:
                described[name] = signal.describe()
        if self.loras is not None:
            described["loras"] = self.loras.model_dump()
        return described


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
        raise FakeMetricsError(
            "; ".join(f"{path}: {reason}" if path else reason for path, reason in problems),
            problems[0][0] or None,
        ) from None


def _describe(error: Any) -> tuple[str, str]:
    ctx = error.get("ctx") or {}
    path = ""
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "function-after":
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
