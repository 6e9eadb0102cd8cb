"""What a benchmark run is made of: its sizes, its request body and its record.

:class:`Bench` travels through every scenario: the parameters of the run, its scratch
directory, the client the load generators use and what was measured so far.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen import Histogram
from loads import LoadResult
from procs import (
    ProcSampler,
    server_env,
)
from report import (
    SATURATED_CORES,
    Report,
)

BENCH_DIR = Path(__file__).resolve().parent
MODEL = "llmsim/sim-model"
PROMPT = "Write a few sentences about load testing."


def request_body(max_tokens: int, stream: bool) -> str:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


# -- parameters -----------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    """Sizes of every scenario; :data:`FULL` and :data:`QUICK` are the two presets."""

    rounds: int
    warmup: float
    duration: float
    concurrency: int
    client_processes: int
    response_tokens: int
    startup_runs: int
    fidelity_streams: int
    fidelity_tokens: int
    fidelity_duration: float
    fidelity_processes: int
    scale_streams: int
    scale_tokens: int
    scale_ramp: float
    scale_processes: int


FULL = Params(
    rounds=3,
    warmup=1.0,
    duration=5.0,
    concurrency=64,
    client_processes=2,
    response_tokens=64,
    startup_runs=7,
    fidelity_streams=500,
    fidelity_tokens=64,
    fidelity_duration=10.0,
    fidelity_processes=1,
    scale_streams=5000,
    scale_tokens=200,
    scale_ramp=5.0,
    scale_processes=2,
)
QUICK = Params(
    rounds=1,
    warmup=0.5,
    duration=3.0,
    concurrency=64,
    client_processes=2,
    response_tokens=64,
    startup_runs=3,
    fidelity_streams=200,
    fidelity_tokens=64,
    fidelity_duration=3.0,
    fidelity_processes=1,
    scale_streams=500,
    scale_tokens=100,
    scale_ramp=1.0,
    scale_processes=1,
)

FIDELITY_TTFT = 0.100
FIDELITY_ITL = 0.010
SCALE_ITL = 0.050


@dataclass(kw_only=True)
class Bench(Report):
    """A run in progress: its sizes, its scratch directory and what it measured so far."""

    params: Params
    selected: set[str]
    workdir: Path
    payloads: dict[int, Path] = field(default_factory=dict)
    """Captured llmsim responses for the ceiling app, by output token count."""

    def server_env(self) -> dict[str, str]:
        """The environment of llmsim and the ceiling app: with ``--plain``, no speed-ups."""
        return server_env(self.plain)

    def generator_processes(self, raw: int) -> int:
        """Processes for a timed load: ``raw`` for the raw client, twice that for aiohttp's,
        which needs about twice the CPU per stream. A generator short of CPU delays
        its own timestamps, and a spare process competes with the server for the cores.
        """
        return 2 * raw if self.client == "aiohttp" else raw

    def record_load(
        self, key: str, load: LoadResult, sampler: ProcSampler | None, throughput: bool = False
    ) -> dict[str, Any]:
        info = load.summary()
        server_cores = machine = None
        if sampler is not None:
            server_cores = sampler.cores_between(load.window_start, load.window_end)
            machine = sampler.machine_cores_between(load.window_start, load.window_end)
        info["server_cores"] = None if server_cores is None else round(server_cores, 3)
        other = None
        if machine is not None and server_cores is not None and not math.isnan(load.client_cores):
            other = max(0.0, machine - server_cores - load.client_cores)
        info["machine_cores"] = None if machine is None else round(machine, 3)
        info["other_cores"] = None if other is None else round(other, 3)
        if other is not None and other >= 0.25:
            self.notes.append(
                f"{key}: other processes on the machine used {other:.2f} cores during the "
                "measurement; its numbers may be lower than on a quiet machine."
            )
        self.loads[key] = info
        if load.client_max_process_cores >= SATURATED_CORES:
            self.notes.append(
                f"{key}: a load-generator process used {load.client_max_process_cores:.2f} "
                "of a core; the generator may limit this measurement."
            )
        if throughput and server_cores is not None:
            if server_cores >= SATURATED_CORES:
                self.notes.append(
                    f"{key}: the server process used {server_cores:.2f} of a core (it is "
                    "single-threaded): the server was the limit of this measurement."
                )
            else:
                self.notes.append(
                    f"{key}: the server used only {server_cores:.2f} of a core while the load "
                    f"generators used {load.client_cores:.2f}: the generators or the machine set "
                    "this rate, so it is a lower bound of the server's capacity."
                )
        return info


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def hist_summary(hist: Histogram, offset: float = 0.0) -> dict[str, Any]:
    """Percentiles in milliseconds of ``value - offset``."""
    if not hist.count:
        return {"count": 0}
    return {
        "count": hist.count,
        "mean_ms": ms(hist.mean - offset),
        "p50_ms": ms(hist.percentile(50) - offset),
        "p90_ms": ms(hist.percentile(90) - offset),
        "p99_ms": ms(hist.percentile(99) - offset),
        "min_ms": ms(hist.minimum - offset),
        "max_ms": ms(hist.maximum - offset),
    }
