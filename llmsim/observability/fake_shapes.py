"""How a faked histogram's observations spread over its buckets.

Each function turns a distribution of a fake-metrics entry, sampled at one instant, into
the share of observations per bucket (the finite bounds in order, then ``+Inf``) and the
mean observed value, which feeds ``_sum``. ``quantiles`` builds a distribution whose
``histogram_quantile`` reading, with Prometheus's linear interpolation inside a bucket, is
the asked value: its distribution function is a straight line within every bucket.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

from llmsim.settings.fake_series import SeriesFake, quantile_of

Shares = tuple[list[float], float]
"""Share of observations per bucket (``+Inf`` last, summing to 1) and the mean value."""
Z99 = NormalDist().inv_cdf(0.99)


def shares_at(entry: SeriesFake, bounds: Sequence[float], elapsed: float) -> Shares | None:
    """The entry's bucket shares at ``elapsed``; None when no share is positive."""
    if entry.lognormal is not None:
        return lognormal(entry.lognormal.p50.at(elapsed), entry.lognormal.p99.at(elapsed), bounds)
    if entry.quantiles is not None:
        targets = [
            (quantile_of(key), signal.at(elapsed)) for key, signal in entry.quantiles.items()
        ]
        return piecewise(targets, bounds)
    assert entry.buckets is not None
    weights = {key: max(signal.at(elapsed), 0.0) for key, signal in entry.buckets.items()}
    return explicit(weights, bounds)


def bucket_key(bound: float) -> str:
    """The ``le`` text a user writes for a bound: ``0.25``, ``2560``, ``+Inf``."""
    if math.isinf(bound):
        return "+Inf"
    return f"{bound:g}" if bound != int(bound) else str(int(bound))


def _from_cumulative(cumulative: list[float], bounds: Sequence[float]) -> Shares:
    """Per-bucket shares from the distribution function at each bound, and the mean.

    The mean takes each bucket's middle (the first bucket starts at 0, the ``+Inf``
    bucket counts as its lower bound), matching a straight line within each bucket.
    """
    shares: list[float] = []
    mean = 0.0
    below = 0.0
    lower = 0.0
    for bound, at in zip(bounds, cumulative, strict=True):
        share = max(min(at, 1.0) - below, 0.0)
        shares.append(share)
        mean += share * (lower + bound) / 2.0
        below += share
        lower = bound
    tail = max(1.0 - below, 0.0)
    shares.append(tail)
    return shares, mean + tail * lower


def lognormal(p50: float, p99: float, bounds: Sequence[float]) -> Shares:
    """A log-normal latency with the given median and 99th percentile."""
    p50 = max(p50, 1e-12)
    sigma = max(math.log(max(p99, p50) / p50), 0.0) / Z99
    if sigma == 0.0:
        cumulative = [1.0 if bound >= p50 else 0.0 for bound in bounds]
        shares, _ = _from_cumulative(cumulative, bounds)
        return shares, p50
    normal = NormalDist(math.log(p50), sigma)
    shares, _ = _from_cumulative([normal.cdf(math.log(bound)) for bound in bounds], bounds)
    return shares, math.exp(math.log(p50) + sigma * sigma / 2.0)


def explicit(weights: dict[str, float], bounds: Sequence[float]) -> Shares | None:
    """Shares given per ``le`` bound, normalised to sum to 1."""
    keys = [bucket_key(bound) for bound in (*bounds, math.inf)]
    raw = [weights.get(key, 0.0) for key in keys]
    total = sum(raw)
    if total <= 0.0:
        return None
    shares = [weight / total for weight in raw]
    mean = 0.0
    lower = 0.0
    for bound, share in zip(bounds, shares, strict=False):
        mean += share * (lower + bound) / 2.0
        lower = bound
    return shares, mean + shares[-1] * lower


def piecewise(targets: list[tuple[float, float]], bounds: Sequence[float]) -> Shares:
    """A distribution function that is a straight line in each bucket and passes through
    every ``(quantile, value)`` target that is alone in its bucket.

    Bucket by bucket from 0: a target's bucket gets the line through the target whose slope
    is the smaller of the one coming from the previous point and the one going on to the
    next target (at most half the rest for the last), so the function never decreases and
    never passes 1. Buckets between targets are filled by a straight line; after the last
    target, what is left goes into the next bucket.
    """
    xs = [0.0, *bounds]
    cumulative: list[float | None] = [None] * len(xs)
    cumulative[0] = 0.0
    ordered = _clean(targets, xs[-1])
    cur_index, cur_x, cur_y = 0, 0.0, 0.0
    for position, (quantile, value) in enumerate(ordered):
        index = next(i for i in range(1, len(xs)) if xs[i] >= value)
        if index <= cur_index:
            continue  # a second target in a bucket already drawn
        left_x, right_x = xs[index - 1], xs[index]
        slope = (quantile - cur_y) / (value - cur_x)
        if left_x > cur_x and right_x > value:
            if position + 1 < len(ordered):
                next_q, next_v = ordered[position + 1]
                onward = (next_q - quantile) / (next_v - value)
            else:
                onward = (1.0 - quantile) / 2.0 / (right_x - value)
            slope = min(slope, onward)
        left = max(quantile - slope * (value - left_x), cur_y)
        right = min(quantile + slope * (right_x - value), 1.0)
        for i in range(cur_index + 1, index):
            cumulative[i] = cur_y + (left - cur_y) * (xs[i] - cur_x) / (left_x - cur_x)
        cumulative[index - 1], cumulative[index] = left, right
        cur_index, cur_x, cur_y = index, right_x, right
    for i in range(cur_index + 1, len(xs)):
        cumulative[i] = 1.0
    return _from_cumulative([float(at or 0.0) for at in cumulative[1:]], bounds)


def _clean(targets: list[tuple[float, float]], highest: float) -> list[tuple[float, float]]:
    """Targets by quantile, each above the one before and at most the highest bound."""
    cleaned: list[tuple[float, float]] = []
    for quantile, value in sorted(targets):
        value = min(value, highest)
        if value > 0 and (not cleaned or value > cleaned[-1][1]):
            cleaned.append((quantile, value))
    return cleaned
