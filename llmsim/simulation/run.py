"""One ``llmsim simulate`` run: a workload through a cluster, summarised (and written)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llmsim.settings.model import Settings
from llmsim.simulation import plots
from llmsim.simulation.cluster import Cluster
from llmsim.simulation.recorder import SUMMARY_FILE, Recorder
from llmsim.simulation.results import SLO, Stats
from llmsim.simulation.workload import Request


class Workload(Protocol):
    def requests(self, seed: int) -> Iterator[Request]:
        """The requests in the order they are sent; the same seed gives the same ones."""


@dataclass(frozen=True, slots=True)
class Setup:
    """The system under test and how the run is reported."""

    settings: Settings
    replicas: int = 1
    router: str = "round-robin"
    seed: int = 0
    slo: SLO | None = None
    output: Path | None = None
    interval: float = 1.0
    """Seconds between the rows of the time series."""
    fleet: tuple[Settings, ...] = ()
    """Instances set up one by one (a fleet file); when given, ``replicas`` is ignored."""
    prefill: tuple[Settings, ...] = ()
    """P/D: prefill instances in front of the decode instances above."""
    cost_per_hour: float | None = None
    """What one instance costs per hour, for the cost per million output tokens (an
    instance whose settings carry ``cost_per_hour`` costs that instead)."""
    plots: bool = True
    """With ``output``, draw PNG plots there too (when matplotlib is installed)."""
    progress: Callable[[int], None] | None = None
    """Told how many requests finished, now and then (a progress bar)."""

    def instance_settings(self) -> tuple[Settings, ...]:
        """The decode (or only) instances."""
        return self.fleet or (self.settings,) * self.replicas

    def labels(self) -> list[str]:
        decode = "decode" if self.prefill else "instance"
        return [f"{decode} {k}" for k in range(len(self.instance_settings()))] + [
            f"prefill {k}" for k in range(len(self.prefill))
        ]


@dataclass(frozen=True, slots=True)
class Result:
    overall: dict[str, float | int]
    instances: list[dict[str, float | int]]
    labels: list[str]

    def as_json(self) -> dict[str, Any]:
        instances = [
            {"name": name, **row} for name, row in zip(self.labels, self.instances, strict=True)
        ]
        return {"overall": self.overall, "instances": instances}


def simulate(setup: Setup, workload: Workload) -> Result:
    """Run ``workload`` through the setup's instances in virtual time."""
    instances = (*setup.instance_settings(), *setup.prefill)
    cluster = Cluster(
        setup.instance_settings(), setup.router, seed=setup.seed, prefill=setup.prefill
    )
    recorder = Recorder(len(instances), setup.slo, setup.output, setup.interval, setup.progress)
    try:
        end = cluster.run(workload.requests(setup.seed), recorder)
    finally:
        recorder.close(cluster, cluster_end(cluster))
    overall = recorder.overall()
    duration = overall.duration or end
    figures = overall.figures(duration, len(instances))
    prices = instance_prices(instances, setup.cost_per_hour)
    if prices is not None:
        figures.update(cost_figures(prices, duration, overall))
    result = Result(
        figures,
        [stats.figures(duration) for stats in recorder.stats],
        setup.labels(),
    )
    if setup.output is not None:
        text = json.dumps(result.as_json(), indent=2, sort_keys=True)
        (setup.output / SUMMARY_FILE).write_text(text + "\n", encoding="utf-8")
        if setup.plots and plots.available():
            plots.write_run_plots(setup.output, overall, recorder.stats)
    return result


def instance_prices(instances: Sequence[Settings], default: float | None) -> list[float] | None:
    """Each instance's price per hour: its settings' ``cost_per_hour``, else ``default``;
    None when an instance has neither (then no cost is reported)."""
    prices = [default if each.cost_per_hour is None else each.cost_per_hour for each in instances]
    if any(price is None for price in prices):
        return None
    return [price for price in prices if price is not None]


def cost_figures(
    prices: Sequence[float], duration: float, overall: Stats
) -> dict[str, float | int]:
    """The run's cost (every instance's price per hour over the run, summed over pools),
    and per million output tokens (0 when none came out)."""
    cost = sum(prices) * duration / 3600.0
    tokens = overall.output_tokens
    return {
        "cost": cost,
        "cost_per_million_output_tokens": cost / tokens * 1e6 if tokens else 0.0,
    }


def cluster_end(cluster: Cluster) -> float:
    return max((instance.run.now for instance in cluster.instances), default=0.0)
