"""Time functions for fake metric values: constants, waves and piecewise schedules.

Every number a fake-metrics spec holds (a gauge's value, a counter's rate, a latency
quantile, a bucket share) is a signal: a function of the seconds since the spec was set.
Signals are plain data with a value at any time; the observability layer samples them.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_right
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from llmsim.settings.units import format_duration, parse_duration

FUNCTION_NAMES = ("ramp", "oscillate", "square", "schedule")
SIGNAL_HINT = (
    'expected a number or one of {"ramp": {...}}, {"oscillate": {...}}, {"square": {...}}, '
    '{"schedule": [[time, value], ...]}'
)


def spec_error(reason: str, name: str | None = None) -> PydanticCustomError:
    """An error whose text is used as given (pydantic would format braces in it)."""
    return PydanticCustomError("spec", "{reason}", {"reason": reason, "name": name})


Period = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Instant = Annotated[float, BeforeValidator(parse_duration)]


def plain_number(number: float) -> float | int:
    """``12`` rather than ``12.0`` when showing a spec back to its author."""
    return int(number) if number.is_integer() else number


class Strict(BaseModel):
    """Spec parts: unknown keys, NaN and infinities are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Fixed(Strict):
    """A constant value."""

    kind: Literal["fixed"] = "fixed"
    value: float

    def at(self, elapsed: float) -> float:
        return self.value

    def bounds(self) -> tuple[float, ...]:
        return (self.value,)

    def describe(self) -> Any:
        return plain_number(self.value)


class _Wave(Strict):
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


class Schedule(Strict):
    """Straight lines between ``[time, value]`` points; two points at one time make a step.

    Before the first point the first value holds, after the last one the last value; with
    ``repeat`` the schedule starts over at its last point's time.
    """

    kind: Literal["schedule"] = "schedule"
    points: tuple[tuple[Instant, float], ...] = Field(min_length=1)
    repeat: bool = False

    @model_validator(mode="after")
    def _times_in_order(self) -> Schedule:
        times = [time for time, _ in self.points]
        if any(later < earlier for earlier, later in itertools.pairwise(times)):
            raise spec_error("schedule times must not decrease")
        if self.repeat and times[-1] <= 0:
            raise spec_error("a repeating schedule needs a last point after time 0")
        return self

    def at(self, elapsed: float) -> float:
        points = self.points
        last_time = points[-1][0]
        elapsed = max(elapsed, 0.0)
        if self.repeat:
            elapsed %= last_time
        index = bisect_right([time for time, _ in points], elapsed)
        if index == 0:
            return points[0][1]
        if index == len(points):
            return points[-1][1]
        (t0, v0), (t1, v1) = points[index - 1], points[index]
        return v0 + (v1 - v0) * (elapsed - t0) / (t1 - t0)

    def bounds(self) -> tuple[float, ...]:
        return tuple(value for _, value in self.points)

    def describe(self) -> Any:
        points = [[format_duration(time), plain_number(value)] for time, value in self.points]
        if self.repeat:
            return {"schedule": {"points": points, "repeat": True}}
        return {"schedule": points}


def _tag_signal(value: Any) -> Any:
    """Turn the user's form (``12`` or ``{"ramp": {...}}``) into a tagged one."""
    if isinstance(value, (Fixed, Ramp, Oscillate, Square, Schedule)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"kind": "fixed", "value": value}
    if isinstance(value, Mapping) and len(value) == 1:
        ((name, params),) = value.items()
        if name == "schedule" and isinstance(params, (list, tuple)):
            return {"kind": "schedule", "points": params}
        if name in FUNCTION_NAMES and isinstance(params, Mapping) and "kind" not in params:
            return {**params, "kind": name}
        if name not in FUNCTION_NAMES:
            raise spec_error(
                f"unknown time function {name!r}: use ramp, oscillate, square or schedule"
            )
    raise spec_error(SIGNAL_HINT)


Signal = Annotated[
    Union[Fixed, Ramp, Oscillate, Square, Schedule],  # noqa: UP007 - a discriminated union
    Field(discriminator="kind"),
    BeforeValidator(_tag_signal),
]
AnySignal = Union[Fixed, Ramp, Oscillate, Square, Schedule]  # noqa: UP007 - used at run time
