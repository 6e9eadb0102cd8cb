"""The PromQL an autoscaler evaluates, computed the way Prometheus does, for tests.

A scrape is a mapping from a sample (its name and sorted labels) to its value; ``rate``
takes two scrapes at the ends of the window, ``histogram_quantile`` interpolates linearly
inside the bucket that holds the rank, as Prometheus's ``bucketQuantile`` does.
"""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Scrape = dict[tuple[str, Labels], float]


def parse(text: str) -> Scrape:
    """Every sample of an exposition by its name and sorted labels."""
    scrape: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            scrape[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return scrape


def select(scrape: Scrape, name: str, **match: str) -> dict[Labels, float]:
    """The samples named ``name`` whose labels include ``match``."""
    return {
        labels: value
        for (sample, labels), value in scrape.items()
        if sample == name and all(dict(labels).get(k) == v for k, v in match.items())
    }


def rate(before: Scrape, after: Scrape, seconds: float, name: str, **match: str) -> float:
    """``sum(rate(name{match}[window]))`` from the scrapes at the window's two ends."""
    old, new = select(before, name, **match), select(after, name, **match)
    increase = 0.0
    for labels, value in new.items():
        previous = old.get(labels, 0.0)
        increase += value - previous if value >= previous else value  # a reset
    return increase / seconds


def histogram_quantile(quantile: float, before: Scrape, after: Scrape, name: str) -> float:
    """``histogram_quantile(q, sum by (le) (rate(name_bucket[window])))``."""
    buckets: dict[float, float] = {}
    for window_end, sign in ((after, 1.0), (before, -1.0)):
        for labels, value in select(window_end, f"{name}_bucket").items():
            bound = float(dict(labels)["le"])
            buckets[bound] = buckets.get(bound, 0.0) + sign * value
    bounds = sorted(buckets)
    total = buckets[math.inf]
    if total <= 0:
        return math.nan
    rank = quantile * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return bounds[-2]
