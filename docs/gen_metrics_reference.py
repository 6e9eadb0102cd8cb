#!/usr/bin/env python3
"""Regenerate the series table in docs/metrics.md from the list of vLLM's series.

The table (every series vLLM's Prometheus logger registers: name, type, labels, when vLLM
registers it, what llmsim reports, buckets) is rendered from
``llmsim.observability.vllm_series.SERIES`` between the BEGIN/END markers of
docs/metrics.md. Everything outside the markers is hand-written and left alone.
``tests/test_metrics_series.py`` fails when the committed region differs from what this
script renders.

Usage::

    python docs/gen_metrics_reference.py          # rewrite the region
    python docs/gen_metrics_reference.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's llmsim, whatever else is installed

from llmsim.observability.vllm_series import (  # noqa: E402
    CONDITIONS,
    ENGINE_LABELS,
    ITERATION_TOKEN_BUCKETS,
    KV_RESIDENCY_BUCKETS,
    REQUEST_LATENCY_BUCKETS,
    SERIES,
    TOKEN_COUNT_BUCKETS,
    TOKEN_GAP_BUCKETS,
    TTFT_BUCKETS,
    Series,
    exported,
)

METRICS = ROOT / "docs" / "metrics.md"
COMMAND = "python docs/gen_metrics_reference.py"
BEGIN = f"<!-- BEGIN GENERATED SERIES: do not edit by hand, run `{COMMAND}` -->"
END = "<!-- END GENERATED SERIES -->"
NAMED_BUCKETS = {
    TTFT_BUCKETS: "TTFT",
    TOKEN_GAP_BUCKETS: "token gap",
    REQUEST_LATENCY_BUCKETS: "request",
    ITERATION_TOKEN_BUCKETS: "iteration tokens",
    KV_RESIDENCY_BUCKETS: "KV residency",
}
"""Bucket sets the hand-written table below the generated one spells out."""
HEADER = (
    "| name | type | labels | registered by vLLM | what llmsim reports | buckets |",
    "|---|---|---|---|---|---|",
)


def _labels(series: Series) -> str:
    if series.labels[: len(ENGINE_LABELS)] == ENGINE_LABELS:
        extra = series.labels[len(ENGINE_LABELS) :]
        return " + ".join(["engine labels", *(f"`{label}`" for label in extra)])
    if len(series.labels) > 4:
        return "the cache configuration (see below), `engine`"
    return ", ".join(f"`{label}`" for label in series.labels)


def _buckets(series: Series) -> str:
    if series.buckets is None:
        return ""
    if series.buckets == TOKEN_COUNT_BUCKETS:
        return "token"
    assert isinstance(series.buckets, tuple)
    if series.buckets in NAMED_BUCKETS:
        return NAMED_BUCKETS[series.buckets]
    return ", ".join(str(bound) for bound in series.buckets)


def row(series: Series) -> str:
    cells = (
        f"`{series.sample_name}`",
        series.kind,
        _labels(series),
        CONDITIONS[series.when],
        series.source,
        _buckets(series),
    )
    return "| " + " | ".join(cells) + " |"


def created_names() -> str:
    """The ``_created`` series llmsim exports next to its counters and histograms."""
    names = [f"`{s.name}_created`" for s in exported() if s.kind != "gauge"]
    return "Creation-time series llmsim exports (see below): " + ", ".join(names) + "."


def render_reference() -> str:
    """The generated region, markers included."""
    rows = [row(series) for series in SERIES]
    return "\n".join([BEGIN, "", *HEADER, *rows, "", created_names(), "", END])


def replace_region(text: str, region: str) -> str:
    """``text`` with the part from BEGIN to END replaced by ``region``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{METRICS.name} has no '{BEGIN}' ... '{END}' region")
    return text[:start] + region + text[end + len(END) :]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="only report whether the region is up to date"
    )
    args = parser.parse_args(argv)
    current = METRICS.read_text(encoding="utf-8")
    updated = replace_region(current, render_reference())
    if args.check:
        if updated != current:
            print(f"docs/metrics.md is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        print("docs/metrics.md: the generated series table is up to date")
        return 0
    if updated != current:
        METRICS.write_text(updated, encoding="utf-8")
        print("docs/metrics.md: series table regenerated")
    else:
        print("docs/metrics.md: already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
