"""Replay published vLLM serving benchmark runs and compare the figures.

vLLM's ``benchmark_serving.py`` / ``vllm bench serve`` result files carry the request rate,
the burstiness, each request's ``input_lens`` and ``output_lens`` and the summary figures
(``median_ttft_ms``, ``p99_tpot_ms``...). A replay sends the same lengths at the same rate
through one simulated server, the runs in the order given, and sets the model's figures
beside the published ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmsim.settings.model import Settings
from llmsim.simulation.driver import Simulation
from llmsim.simulation.stats import Summary, summarize
from llmsim.simulation.workload import poisson_send_times, requests_at

FIGURES = ("median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms")
"""The published figures a replay is compared on."""


class RunFileError(ValueError):
    """A file that is not a vLLM serving benchmark result (or a bundle of them)."""


@dataclass(frozen=True, slots=True)
class PublishedRun:
    source: str
    request_rate: float
    burstiness: float
    input_lens: tuple[int, ...]
    output_lens: tuple[int, ...]
    figures: Mapping[str, float]
    """The published figures of :data:`FIGURES` the file holds, in milliseconds."""

    @classmethod
    def from_result(cls, data: Mapping[str, Any], source: str) -> PublishedRun:
        try:
            inputs = tuple(int(n) for n in data["input_lens"])
            outputs = tuple(int(n) for n in data["output_lens"])
            rate = float(data.get("request_rate", "inf"))
            burstiness = float(data.get("burstiness") or 1.0)
        except (KeyError, TypeError, ValueError) as exc:
            raise RunFileError(f"{source}: not a vLLM serving benchmark result ({exc})") from None
        if len(inputs) != len(outputs):
            raise RunFileError(f"{source}: input_lens and output_lens differ in length")
        figures = {key: float(data[key]) for key in FIGURES if data.get(key) is not None}
        return cls(str(data.get("source", source)), rate, burstiness, inputs, outputs, figures)


def load_runs(path: Path) -> list[PublishedRun]:
    """A result file, or a bundle ``{"runs": [result, ...]}`` of them in the order they ran."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunFileError(f"{path}: cannot read a JSON result ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("runs"), list):
        return [
            PublishedRun.from_result(run, f"{path} run {k}") for k, run in enumerate(data["runs"])
        ]
    if not isinstance(data, dict):
        raise RunFileError(f"{path}: not a vLLM serving benchmark result")
    return [PublishedRun.from_result(data, str(path))]


@dataclass(frozen=True, slots=True)
class Comparison:
    run: PublishedRun
    model: Summary

    def errors(self) -> dict[str, float]:
        """Relative error of the model for each published figure (0.1 = 10 % above)."""
        model = self.model.as_ms()
        return {
            key: model[key] / published - 1.0
            for key, published in self.run.figures.items()
            if published > 0
        }


def replay(
    settings: Settings, runs: Iterable[PublishedRun], *, seed: int = 0, warm_up: bool = True
) -> list[Comparison]:
    """Replay ``runs`` one after another on one simulated server."""
    simulation = Simulation(settings, seed=seed)
    comparisons = []
    for run in runs:
        times = poisson_send_times(
            len(run.input_lens), run.request_rate, burstiness=run.burstiness, seed=seed
        )
        requests = requests_at(run.input_lens, run.output_lens, times)
        records = simulation.run(requests, warm_up=warm_up)
        comparisons.append(Comparison(run, summarize(records)))
    return comparisons


def report(comparisons: Sequence[Comparison]) -> list[str]:
    """One line per run and figure: published, model, error."""
    lines = [f"{'rate':>6}  {'figure':<15}{'published':>11}{'model':>11}{'error':>9}"]
    for comparison in comparisons:
        model = comparison.model.as_ms()
        errors = comparison.errors()
        rate = comparison.run.request_rate
        shown = "inf" if rate == float("inf") else f"{rate:g}/s"
        for key, published in comparison.run.figures.items():
            error = errors.get(key)
            cell = f"{error * 100:+8.1f}%" if error is not None else f"{'-':>9}"
            lines.append(f"{shown:>6}  {key:<15}{published:>9.1f}ms{model[key]:>9.1f}ms{cell}")
    return lines
