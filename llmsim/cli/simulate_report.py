"""The tables ``llmsim simulate`` prints."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.table import Table

from llmsim.simulation.results import METRICS, QUANTILES
from llmsim.simulation.run import Result

Figures = dict[str, float | int]
Row = tuple[str, Callable[[Figures], str]]
PREFILLS = "prefills (P/D)"


def _ms(value: float | int) -> str:
    return f"{value * 1000:.1f}"


def summary_table(result: Result, title: str) -> Table:
    """Columns: overall, then one per instance (when there are several)."""
    columns: list[tuple[str, Figures]] = [("overall", result.overall)]
    if len(result.instances) > 1:
        columns += list(zip(result.labels, result.instances, strict=True))
    table = Table(title=title, title_justify="left")
    table.add_column("figure")
    for name, _ in columns:
        table.add_column(name, justify="right")
    for label, cell in _rows():
        if label == PREFILLS and not result.overall["prefills"]:
            continue
        table.add_row(label, *(cell(figures) for _, figures in columns))
    overall = result.overall
    if "cost_per_million_output_tokens" in overall:
        table.add_row("cost", f"{overall['cost']:.2f}", *([""] * (len(columns) - 1)))
        per_million = f"{overall['cost_per_million_output_tokens']:.3f}"
        table.add_row("cost per 1M output tokens", per_million, *([""] * (len(columns) - 1)))
    return table


def _rows() -> list[Row]:
    rows: list[Row] = [
        ("requests", lambda f: f"{f['requests']}"),
        (PREFILLS, lambda f: f"{f['prefills']}"),
        ("duration (s)", lambda f: f"{f['duration_s']:.2f}"),
        ("requests/s", lambda f: f"{f['request_throughput']:.2f}"),
        ("output tokens/s", lambda f: f"{f['output_throughput']:.1f}"),
        ("goodput (req/s)", lambda f: f"{f['goodput']:.2f}"),
        ("meeting the SLO", lambda f: f"{f['good_share'] * 100:.1f}%"),
    ]
    for metric in METRICS:
        rows.append((f"{metric} mean (ms)", _metric(f"mean_{metric}_s")))
        rows += [(f"{metric} p{q} (ms)", _metric(f"p{q}_{metric}_s")) for q in QUANTILES]
    rows += [
        ("preemptions", lambda f: f"{f['preemptions']}"),
        ("prefix cache hit rate", lambda f: f"{f['prefix_cache_hit_rate'] * 100:.1f}%"),
        ("KV usage peak", lambda f: f"{f['peak_kv_usage'] * 100:.1f}%"),
        ("KV usage mean", lambda f: f"{f['mean_kv_usage'] * 100:.1f}%"),
    ]
    return rows


def _metric(key: str) -> Callable[[Figures], str]:
    return lambda figures: _ms(figures[key])


def sweep_table(name: str, points: Sequence[tuple[float, Result]]) -> Table:
    """One row per point of a sweep."""
    table = Table(title=f"sweep over {name}", title_justify="left")
    for column in (name, "req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99"):
        table.add_column(column, justify="right")
    table.add_column("SLO met", justify="right")
    for value, result in points:
        f = result.overall
        table.add_row(
            f"{value:g}",
            f"{f['request_throughput']:.2f}",
            f"{f['output_throughput']:.1f}",
            *(_ms(f[key]) for key in ("p50_ttft_s", "p99_ttft_s", "p50_tpot_s", "p99_tpot_s")),
            f"{f['good_share'] * 100:.1f}%",
        )
    return table
