"""Which ``vllm:`` series a fake-metrics spec names, read from the registry itself.

Every family the registry exports under a ``vllm:`` name is listed with its type, labels
and bucket bounds, so a series registered now or later can be faked by its name; a spec's
entries are matched against that list, with the form their type needs and a full label set.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import Metric

from llmsim.observability.fake_shapes import bucket_key
from llmsim.settings.fake_entries import SeriesFake
from llmsim.settings.fake_metrics import FakeMetrics, FakeMetricsError

SeriesKey = tuple[str, tuple[str, ...]]
"""A family name and the values of its labels, in the family's label order."""


@dataclass(frozen=True)
class FamilyInfo:
    """What the registry says about one family: its type, labels and bucket bounds."""

    name: str
    kind: str
    label_names: tuple[str, ...]
    bounds: tuple[float, ...]
    only_values: Mapping[str, str] = field(default_factory=dict)
    """Labels that have one value in every live series: the default for an entry."""

    @property
    def shown_name(self) -> str:
        """The name as the exposition writes it (a counter with ``_total``)."""
        return f"{self.name}_total" if self.kind == "counter" else self.name


@dataclass(frozen=True)
class Target:
    """One resolved entry of a spec: the series it fakes and how."""

    key: SeriesKey
    info: FamilyInfo
    entry: SeriesFake
    spec_key: str
    """The name the spec used (``vllm:request_success_total`` or ``vllm:request_success``)."""

    def shown(self, scrape: Mapping[tuple[str, tuple[tuple[str, str], ...]], float]) -> Any:
        """This series' value in a scrape: a gauge's or counter's value, a histogram's
        count and sum."""
        name, values = self.key
        labels = dict(zip(self.info.label_names, values, strict=True))
        at = tuple(sorted(labels.items()))
        if self.info.kind == "histogram":
            count, total = scrape.get((f"{name}_count", at)), scrape.get((f"{name}_sum", at))
            return {"labels": labels, "count": count, "sum": total}
        sample = f"{name}_total" if self.info.kind == "counter" else name
        return {"labels": labels, "value": scrape.get((sample, at))}


def catalogue(families: Iterable[Metric]) -> dict[str, FamilyInfo]:
    """The ``vllm:`` families by name, read from their samples."""
    found: dict[str, FamilyInfo] = {}
    for family in families:
        if not family.name.startswith("vllm:"):
            continue
        labels = label_names_of(family)
        seen: dict[str, set[str]] = {name: set() for name in labels}
        for sample in family.samples:
            for name in labels:
                seen[name].add(sample.labels.get(name, ""))
        only = {name: next(iter(values)) for name, values in seen.items() if len(values) == 1}
        bounds = tuple(bounds_of(family) or ())
        found[family.name] = FamilyInfo(family.name, family.type, labels, bounds, only)
    return found


def resolve(
    spec: FakeMetrics, families: Mapping[str, FamilyInfo], defaults: Mapping[str, str]
) -> list[Target]:
    """Match every entry of ``spec`` to a family; raise :class:`FakeMetricsError` if one
    names no ``vllm:`` series, has the wrong form for its type, or misses a label."""
    targets: dict[SeriesKey, Target] = {}
    for name, entries in spec.all_series().items():
        info = families.get(name)
        if info is None and name.endswith("_total"):
            info = families.get(name.removesuffix("_total"))
            info = info if info is not None and info.kind == "counter" else None
        if info is None:
            raise FakeMetricsError(f"{name}: no such series; {_known(families)}", name)
        for index, entry in enumerate(entries):
            param = name if len(entries) == 1 else f"{name}[{index}]"
            _check_kind(info, entry, param)
            key = (info.name, _label_values(info, entry.labels, defaults, param))
            if key in targets:
                raise FakeMetricsError(f"{param}: the same label set is given twice", param)
            targets[key] = Target(key, info, entry, name)
    return list(targets.values())


def _known(families: Mapping[str, FamilyInfo]) -> str:
    return "known: " + ", ".join(sorted(info.shown_name for info in families.values()))


_FORMS = {
    "gauge": 'a value (a number or a time function), e.g. 12 or {"value": 12}',
    "counter": 'a rate per second, e.g. {"rate": 20}',
    "histogram": 'a rate and a distribution, e.g. {"rate": 20, "quantiles": {"p90": 0.5}}',
}


def _check_kind(info: FamilyInfo, entry: SeriesFake, param: str) -> None:
    kind = info.kind if info.kind in _FORMS else "gauge"
    if entry.kind != kind:
        raise FakeMetricsError(
            f"{param}: {info.shown_name} is a {kind}: give {_FORMS[kind]}", param
        )
    if entry.buckets is not None:
        allowed = [bucket_key(bound) for bound in (*info.bounds, math.inf)]
        unknown = sorted(set(entry.buckets) - set(allowed))
        if unknown:
            raise FakeMetricsError(
                f"{param}.buckets: no bucket {unknown[0]!r}; the bounds are {', '.join(allowed)}",
                f"{param}.buckets",
            )


def _label_values(
    info: FamilyInfo, labels: Mapping[str, str], defaults: Mapping[str, str], param: str
) -> tuple[str, ...]:
    unknown = sorted(set(labels) - set(info.label_names))
    if unknown:
        names = ", ".join(info.label_names) or "none"
        raise FakeMetricsError(
            f"{param}.labels: {info.shown_name} has no label {unknown[0]!r} (its labels: {names})",
            f"{param}.labels",
        )
    values = []
    for name in info.label_names:
        value = labels.get(name, defaults.get(name, info.only_values.get(name)))
        if value is None:
            raise FakeMetricsError(
                f"{param}.labels: give a value for {info.shown_name}'s label {name!r}",
                f"{param}.labels",
            )
        values.append(value)
    return tuple(values)


def label_names_of(family: Metric) -> tuple[str, ...]:
    for sample in family.samples:
        return tuple(name for name in sample.labels if name != "le")
    return ()


def bounds_of(family: Metric) -> list[float] | None:
    bounds = sorted(
        {
            float(sample.labels["le"])
            for sample in family.samples
            if sample.name.endswith("_bucket") and "le" in sample.labels
        }
    )
    finite = [bound for bound in bounds if math.isfinite(bound)]
    return finite or None
