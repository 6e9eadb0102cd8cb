"""PNG plots of a run (needs matplotlib: ``pip install 'llmsim[plot]'``).

Latency CDFs come from the run's histograms and the time series from the CSV it wrote, so
plotting holds nothing per request either. Figures are drawn without pyplot: no global state.
"""

from __future__ import annotations

import csv
import importlib.util
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llmsim.simulation.results import GROWTH, SMALLEST, Histogram, Stats

if TYPE_CHECKING:
    from llmsim.simulation.run import Result

INSTALL_HINT = "PNG plots need matplotlib: pip install 'llmsim[plot]'"
CDF_METRICS = ("ttft", "tpot", "itl", "e2e")
SERIES = (
    ("running", "running requests"),
    ("waiting", "waiting requests"),
    ("kv_usage", "KV usage"),
)


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def cdf_points(histogram: Histogram) -> tuple[list[float], list[float]]:
    """(value in ms, share of requests at or below it), one point per non-empty bucket."""
    xs, ys, seen = [], [], 0
    for index in sorted(histogram.buckets):
        seen += histogram.buckets[index]
        value = 0.0 if index == 0 else SMALLEST * GROWTH ** (index - 0.5)
        xs.append(value * 1000.0)
        ys.append(seen / histogram.count)
    return xs, ys


def write_run_plots(output: Path, overall: Stats, instances: Sequence[Stats]) -> list[Path]:
    """latency_cdf.png, timeseries.png and instances.png in ``output``; their paths."""
    from matplotlib.figure import Figure

    written = []
    figure = Figure(figsize=(10, 6), layout="constrained")
    for axes, metric in zip(figure.subplots(2, 2).flat, CDF_METRICS, strict=True):
        xs, ys = cdf_points(overall.latencies[metric])
        axes.step(xs, ys, where="post")
        axes.set(title=f"{metric.upper()} CDF", xlabel="ms", ylabel="share")
        axes.grid(alpha=0.3)
    written.append(_save(figure, output / "latency_cdf.png"))

    series = _read_series(output / "timeseries.csv")
    figure = Figure(figsize=(10, 8), layout="constrained")
    for axes, (column, label) in zip(figure.subplots(len(SERIES), 1), SERIES, strict=True):
        for instance, rows in sorted(series.items()):
            axes.plot(rows["time_s"], rows[column], label=f"instance {instance}", linewidth=1)
        axes.set(ylabel=label)
        axes.grid(alpha=0.3)
    figure.axes[-1].set_xlabel("seconds")
    if len(series) <= 8:
        figure.axes[0].legend(fontsize="small")
    written.append(_save(figure, output / "timeseries.png"))

    figure = Figure(figsize=(8, 4), layout="constrained")
    axes = figure.subplots()
    names = [str(k) for k in range(len(instances))]
    axes.bar(names, [stats.requests for stats in instances])
    axes.set(title="requests per instance", xlabel="instance", ylabel="requests")
    written.append(_save(figure, output / "instances.png"))
    return written


def write_sweep_plot(path: Path, name: str, points: Sequence[tuple[float, Result]]) -> Path:
    """Latency against the swept value: TTFT and TPOT at p50 and p99."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    values = [value for value, _ in points]
    for axes, metric in zip(figure.subplots(1, 2), ("ttft", "tpot"), strict=True):
        for q in (50, 99):
            key = f"p{q}_{metric}_s"
            axes.plot(values, [r.overall[key] * 1000.0 for _, r in points], "o-", label=f"p{q}")
        axes.set(title=f"{metric.upper()} against {name}", xlabel=name, ylabel="ms")
        axes.legend()
        axes.grid(alpha=0.3)
    return _save(figure, path)


def _save(figure: object, path: Path) -> Path:
    figure.savefig(path, dpi=100)  # type: ignore[attr-defined]
    return path


def _read_series(path: Path) -> dict[str, dict[str, list[float]]]:
    series: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            columns = series[row["instance"]]
            for key in ("time_s", "running", "waiting", "kv_usage"):
                columns[key].append(float(row[key]))
    return series
