"""Collect a run's results as it goes: per-instance statistics, and with an output directory
every request as one JSON line and every instance's state on a fixed time grid, written as
they happen so a long run holds nothing per request in memory."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from llmsim.engine.step.virtual import VirtualRun
from llmsim.simulation.cluster import Cluster, Observer, Outcome
from llmsim.simulation.results import SLO, Stats

REQUESTS_FILE = "requests.jsonl"
REQUESTS_CSV_FILE = "requests.csv"
REQUEST_COLUMNS = (
    "instance",
    "prefix",
    "adapter",
    "prompt_tokens",
    "output_tokens",
    "cached_tokens",
    "sent_s",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "queue_s",
    "meets_slo",
)
TIMESERIES_FILE = "timeseries.csv"
SUMMARY_FILE = "summary.json"
PROGRESS_EVERY = 50
TIMESERIES_COLUMNS = ("time_s", "instance", "running", "waiting", "kv_usage", "preemptions")


@dataclass(slots=True)
class _State:
    running: int = 0
    waiting: int = 0
    usage: float = 0.0
    preemptions: int = 0
    next_sample: float = 0.0


class Recorder(Observer):
    """An observer that summarises, and writes files when given ``output``."""

    def __init__(
        self,
        replicas: int,
        slo: SLO | None = None,
        output: Path | None = None,
        interval: float = 1.0,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.stats = [Stats() for _ in range(replicas)]
        self.progress = progress
        """Told the number of finished requests every :data:`PROGRESS_EVERY` of them."""
        self._done = 0
        self.slo = slo
        self.interval = interval
        self._states = [_State() for _ in range(replicas)]
        self._files = ExitStack()
        self._requests: IO[str] | None = None
        self._requests_csv: Any = None
        self._series: Any = None
        if output is not None:
            output.mkdir(parents=True, exist_ok=True)
            self._requests = self._files.enter_context(
                (output / REQUESTS_FILE).open("w", encoding="utf-8")
            )
            table = self._files.enter_context(
                (output / REQUESTS_CSV_FILE).open("w", encoding="utf-8", newline="")
            )
            self._requests_csv = csv.writer(table, lineterminator="\n")
            self._requests_csv.writerow(REQUEST_COLUMNS)
            series = self._files.enter_context(
                (output / TIMESERIES_FILE).open("w", encoding="utf-8", newline="")
            )
            self._series = csv.writer(series, lineterminator="\n")
            self._series.writerow(TIMESERIES_COLUMNS)

    def finished(self, outcome: Outcome) -> None:
        good = self.slo.met(outcome) if self.slo is not None else True
        self.stats[outcome.instance].add(outcome, good)
        self._done += 1
        if self.progress is not None and self._done % PROGRESS_EVERY == 0:
            self.progress(self._done)
        if self._requests is not None:
            record = _record(outcome, good)
            self._requests.write(json.dumps(record) + "\n")
            self._requests_csv.writerow(_cell(record[name]) for name in REQUEST_COLUMNS)

    def prefilled(self, instance: int) -> None:
        self.stats[instance].prefills += 1

    def token_gaps(self, instance: int, gap: float, count: int) -> None:
        self.stats[instance].latencies["itl"].add(gap, count)

    def step(self, instance: int, run: VirtualRun, duration: float) -> None:
        engine, stats = run.engine, self.stats[instance]
        usage = engine.usage()
        stats.peak_kv = max(stats.peak_kv, usage)
        stats.kv_time += usage * duration
        state = self._states[instance]
        self._sample(instance, run.now)
        state.running, state.waiting = engine.num_running, engine.num_waiting
        state.usage, state.preemptions = usage, engine.num_preemptions

    def close(self, cluster: Cluster, end: float) -> None:
        """Take the engines' counters, write the rest of the grid and close the files."""
        for k, instance in enumerate(cluster.instances):
            engine, stats = instance.run.engine, self.stats[k]
            stats.preemptions = engine.num_preemptions
            stats.prefix_queries, stats.prefix_hits = engine.prefix_queries, engine.prefix_hits
            self._sample(k, end + self.interval * 0.5)
        self._files.close()

    def overall(self) -> Stats:
        total = Stats()
        for stats in self.stats:
            total.merge(stats)
        return total

    def _sample(self, instance: int, until: float) -> None:
        """Grid rows before ``until`` show the state the last step left."""
        state = self._states[instance]
        while state.next_sample < until:
            if self._series is not None:
                self._series.writerow(
                    (
                        f"{state.next_sample:.6f}",
                        instance,
                        state.running,
                        state.waiting,
                        f"{state.usage:.6f}",
                        state.preemptions,
                    )
                )
            state.next_sample += self.interval


def _record(outcome: Outcome, good: bool) -> dict[str, Any]:
    return {
        "instance": outcome.instance,
        "prefix": outcome.prefix,
        "adapter": outcome.adapter,
        "prompt_tokens": outcome.prompt_tokens,
        "output_tokens": outcome.output_tokens,
        "cached_tokens": outcome.cached_tokens,
        "sent_s": round(outcome.sent, 9),
        "ttft_s": round(outcome.ttft, 9),
        "tpot_s": None if outcome.tpot is None else round(outcome.tpot, 9),
        "e2e_s": round(outcome.e2e, 9),
        "queue_s": round(outcome.queue, 9),
        "meets_slo": good,
    }


def _cell(value: Any) -> Any:
    """A CSV cell as JSON writes the value: empty for null, true/false for booleans."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value
