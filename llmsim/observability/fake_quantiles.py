"""A histogram whose ``histogram_quantile`` reading is the quantiles asked for.

Prometheus estimates a quantile by linear interpolation inside the bucket that holds it,
so a distribution function that is a straight line within every bucket is read back
exactly. This module builds one through given ``(quantile, value)`` targets: bucket by
bucket, a target's bucket gets the line through it; where targets sit in neighbouring
buckets, their lines meet at the shared bound, and the one free value at the start of
such a run is chosen so that every line rises and stays below 1. Only when the buckets
make that impossible (two targets too close for their bounds) is a target missed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Target = tuple[float, float]
"""A quantile (0 to 1) and the value it should read."""


@dataclass(frozen=True)
class _Group:
    """The targets in bucket ``index`` (from ``xs[index - 1]`` to ``xs[index]``)."""

    index: int
    targets: list[Target]


def cumulative_at_bounds(targets: Sequence[Target], bounds: Sequence[float]) -> list[float]:
    """The distribution function at each finite bound; past the last, the rest is ``+Inf``."""
    xs = [0.0, *bounds]
    values = [0.0] * len(xs)
    groups = _groups(_clean(targets, xs[-1]), xs)
    done, cx, cy = 0, 0.0, 0.0  # the last bound drawn and its value
    for run in _runs(groups):
        following = _following(groups, run)
        start = _start_value(run, xs, done, cx, cy, following)
        left_x = xs[run[0].index - 1]
        for i in range(done + 1, run[0].index):
            values[i] = cy + (start - cy) * (xs[i] - cx) / (left_x - cx)
        values[run[0].index - 1] = start
        value = start
        for group in run:
            value = _right(group, xs, value)
            values[group.index] = value
        done, cx, cy = run[-1].index, xs[run[-1].index], value
    for i in range(done + 1, len(xs)):
        values[i] = 1.0
    return values[1:]


def _clean(targets: Sequence[Target], highest: float) -> list[Target]:
    """Targets by quantile, each value above the one before and at most the highest bound."""
    cleaned: list[Target] = []
    for quantile, value in sorted(targets):
        value = min(value, highest)
        if 0.0 < quantile < 1.0 and value > 0 and (not cleaned or value > cleaned[-1][1]):
            cleaned.append((quantile, value))
    return cleaned


def _groups(targets: list[Target], xs: list[float]) -> list[_Group]:
    groups: list[_Group] = []
    for quantile, value in targets:
        index = next(i for i in range(1, len(xs)) if xs[i] >= value)
        if groups and groups[-1].index == index:
            groups[-1].targets.append((quantile, value))
        else:
            groups.append(_Group(index, [(quantile, value)]))
    return groups


def _runs(groups: list[_Group]) -> list[list[_Group]]:
    """Groups in neighbouring buckets, which share their bounds' values."""
    runs: list[list[_Group]] = []
    for group in groups:
        if runs and runs[-1][-1].index == group.index - 1:
            runs[-1].append(group)
        else:
            runs.append([group])
    return runs


def _following(groups: list[_Group], run: list[_Group]) -> Target | None:
    after = groups.index(run[-1]) + 1
    return groups[after].targets[0] if after < len(groups) else None


def _right(group: _Group, xs: list[float], left: float) -> float:
    """The value at the bucket's upper bound of the line from ``left`` through its targets
    (through the first and last when there are several)."""
    left_x, right_x = xs[group.index - 1], xs[group.index]
    (q1, v1), (q2, v2) = group.targets[0], group.targets[-1]
    if len(group.targets) > 1:
        return min(q2 + (q2 - q1) / (v2 - v1) * (right_x - v2), 1.0)
    return min(q1 + (q1 - left) * (right_x - v1) / (v1 - left_x), 1.0)


def _start_value(
    run: list[_Group],
    xs: list[float],
    done: int,
    cx: float,
    cy: float,
    following: Target | None,
) -> float:
    """The value at the run's lower bound: fixed when it is the last bound drawn or the
    first bucket holds two targets, else the one closest to a gentle line that keeps
    every bound in order."""
    first = run[0]
    left_x = xs[first.index - 1]
    (q1, v1) = first.targets[0]
    if len(first.targets) > 1:
        (q2, v2) = first.targets[-1]
        return max(q1 - (q2 - q1) / (v2 - v1) * (v1 - left_x), cy)
    if first.index - 1 == done:
        return cy
    low, high = _feasible(run, xs, cy, following)
    slope = (q1 - cy) / (v1 - cx)
    onward = _onward_slope(run[0], run, xs, following)
    preferred = q1 - min(slope, onward) * (v1 - left_x)
    if low > high:
        return preferred
    return min(max(preferred, low), high)


def _onward_slope(
    group: _Group, run: list[_Group], xs: list[float], following: Target | None
) -> float:
    """The slope toward the next target (or toward half of what is left, for the last)."""
    quantile, value = group.targets[-1]
    position = run.index(group)
    nxt = run[position + 1].targets[0] if position + 1 < len(run) else following
    if nxt is not None:
        return (nxt[0] - quantile) / (nxt[1] - value)
    room = xs[group.index] - value
    return (1.0 - quantile) / 2.0 / room if room > 0 else float("inf")


def _feasible(
    run: list[_Group], xs: list[float], cy: float, following: Target | None
) -> tuple[float, float]:
    """The start values for which every line in the run rises, meets the next one's fixed
    start, and ends no higher than 1 (or than the way to the next target).

    Each bound's value is ``a + b * start``: a line through a target maps the value at its
    lower bound to the value at its upper bound by an affine function.
    """
    low, high = cy, run[0].targets[0][0]
    a, b = 0.0, 1.0
    for position, group in enumerate(run):
        left_x, right_x = xs[group.index - 1], xs[group.index]
        quantile, value = group.targets[0]
        if len(group.targets) > 1 and position > 0:
            (q2, v2) = group.targets[-1]
            fixed = quantile - (q2 - quantile) / (v2 - value) * (value - left_x)
            low, high = _meet(a, b, fixed, low, high)
            break
        low, high = _at_most(a, b, quantile, low, high)  # the line rises
        stretch = (right_x - left_x) / (value - left_x)
        a, b = quantile * stretch + a * (1.0 - stretch), b * (1.0 - stretch)
        ceiling = 1.0
        if position + 1 == len(run) and following is not None:
            ceiling = quantile + _onward_slope(group, run, xs, following) * (right_x - value)
        low, high = _at_most(a, b, ceiling, low, high)
    return low, high


def _at_most(a: float, b: float, ceiling: float, low: float, high: float) -> tuple[float, float]:
    """Narrow ``[low, high]`` to the starts where ``a + b * start <= ceiling``."""
    if b > 0:
        return low, min(high, (ceiling - a) / b)
    if b < 0:
        return max(low, (ceiling - a) / b), high
    return (low, high) if a <= ceiling + 1e-12 else (1.0, 0.0)


def _meet(a: float, b: float, fixed: float, low: float, high: float) -> tuple[float, float]:
    """Narrow ``[low, high]`` to the start where ``a + b * start == fixed``."""
    if b == 0:
        return (low, high) if abs(a - fixed) < 1e-12 else (1.0, 0.0)
    start = (fixed - a) / b
    return (start, start) if low <= start <= high else (1.0, 0.0)
