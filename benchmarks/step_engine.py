#!/usr/bin/env python3
"""The step latency model under load: step period, server CPU per step, zero-latency rate.

    python benchmarks/step_engine.py            # about 3-4 minutes
    python benchmarks/step_engine.py --quick    # smaller and shorter, for a smoke test

Same-run comparisons, not timed tests:

1. **Step period.** With 256 streams and 10 ms steps, and with 1 000 streams and 50 ms steps,
   the mean period between engine steps (``vllm:iteration_tokens_total_count`` over the
   measuring window) against the modelled step time, and the load generators' errors.
2. **CPU per step.** Server CPU seconds per step with 64, 256 and 1 024 decoding sequences
   (20 ms steps): it should grow linearly with the batch.
3. **Zero-latency rate.** Streamed tokens/s with no modelled latency, step model against the
   ``constant`` model (with and without prefix caching), 64 streams each, in alternating
   rounds after a warm-up (best and median round of each, and their ratios to ``constant``).

Prints a table and writes ``benchmarks/results/step_engine.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loads import run_loadgen
from procs import Server, cleanup_on_exit, proc_cpu_seconds, raise_fd_limit, start_llmsim

RESULTS = Path(__file__).resolve().parent / "results"
STEP_ARGS = ["--latency-model", "step", "--max-model-len", "100000", "--no-dashboard"]


@dataclass
class _Shim:
    """What ``run_loadgen`` reads from a benchmark run."""

    workdir: Path
    client: str = "raw"


def steps_count(server: Server) -> float:
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("vllm:iteration_tokens_total_count"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class Sampler(threading.Thread):
    """Samples (wall time, steps, server CPU seconds) every 0.2 s."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.samples: list[tuple[float, float, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            cpu = proc_cpu_seconds(self.server.child.pid) or 0.0
            self.samples.append((time.time(), steps_count(self.server), cpu))
            self.stopping.wait(0.2)

    def between(self, start: float, end: float) -> tuple[float, float, float]:
        """(seconds, steps, cpu seconds) between the samples nearest ``start`` and ``end``."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        first, last = inside[0], inside[-1]
        return last[0] - first[0], last[1] - first[1], last[2] - first[2]


def body(max_tokens: int) -> str:
    return json.dumps(
        {
            "messages": [{"role": "user", "content": "Tell me a story."}],
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "stream": True,
        }
    )


def loaded_run(
    workdir: Path, name: str, streams: int, itl: str, seconds: float, extra: list[str]
) -> dict[str, Any]:
    server = start_llmsim(
        workdir,
        name,
        *STEP_ARGS,
        "--inter-token-latency", itl,
        "--max-num-seqs", str(max(streams, 256)),
        "--kv-cache-size", str(streams * 3000 + 100_000),
        *extra,
    )  # fmt: skip
    sampler = Sampler(server)
    sampler.start()
    try:
        step = float(itl.removesuffix("ms")) / 1000
        tokens = int((seconds + 8) / step) + 10
        processes = 1 if streams <= 256 else 2
        load = run_loadgen(
            _Shim(workdir),  # type: ignore[arg-type]
            name,
            server.chat_url,
            body(tokens),
            concurrency=streams,
            duration=seconds,
            stream=True,
            processes=processes,
            ramp=1.0,
            warmup=3.0,
            request_timeout=seconds + 60,
        )
    finally:
        sampler.stopping.set()
        sampler.join()
        server.child.stop()
    wall, steps, cpu = sampler.between(load.window_start, load.window_end)
    return {
        "streams": streams,
        "modelled_step_ms": step * 1000,
        "mean_step_ms": round(wall / steps * 1000, 3) if steps else None,
        "period_error_percent": round((wall / steps / step - 1) * 100, 2) if steps else None,
        "steps": steps,
        "server_cpu_ms_per_step": round(cpu / steps * 1000, 3) if steps else None,
        "errors": load.error_count,
        "chunks_per_second": round(load.chunks_per_second, 1),
    }


def zero_latency_rate(workdir: Path, model: str, seconds: float) -> dict[str, Any]:
    args = {
        "constant": ["--no-dashboard", "--max-model-len", "100000"],
        "step": STEP_ARGS,
        "step-no-prefix-caching": [*STEP_ARGS, "--no-enable-prefix-caching"],
    }[model]
    server = start_llmsim(workdir, f"zero-{model}", *args)
    try:
        load = run_loadgen(
            _Shim(workdir),  # type: ignore[arg-type]
            f"zero-{model}",
            server.chat_url,
            body(2000),
            concurrency=64,
            duration=seconds,
            stream=True,
            warmup=1.0,
        )
    finally:
        server.child.stop()
    return {
        "model": model,
        "chunks_per_second": round(load.chunks_per_second, 1),
        "errors": load.error_count,
    }


def zero_latency_comparison(workdir: Path, seconds: float, rounds: int) -> list[dict[str, Any]]:
    """All models in alternating rounds after one unmeasured warm-up run; each one's best and
    median round, and step's ratio to constant for both.

    The best round, because on a shared machine a neighbour's load only ever slows a round;
    the median too, because the first runs after a quiet spell tend to be the fastest, which
    would favour whichever model went first. The warm-up takes most of that edge away.
    """
    models = ("constant", "step", "step-no-prefix-caching")
    zero_latency_rate(workdir, "constant", min(seconds, 3.0))  # warm-up, not counted
    runs: dict[str, list[dict[str, Any]]] = {model: [] for model in models}
    for index in range(rounds):
        for model in models if index % 2 == 0 else reversed(models):
            runs[model].append(zero_latency_rate(workdir, model, seconds))
    rows = [max(runs[model], key=lambda row: row["chunks_per_second"]) for model in models]
    for model, row in zip(models, rows, strict=True):
        row["rounds"] = [run["chunks_per_second"] for run in runs[model]]
        row["median_chunks_per_second"] = statistics.median(row["rounds"])
        row["errors"] = sum(run["errors"] for run in runs[model])
    for row in rows[1:]:
        row["over_constant"] = round(row["chunks_per_second"] / rows[0]["chunks_per_second"], 3)
        row["median_over_constant"] = round(
            row["median_chunks_per_second"] / rows[0]["median_chunks_per_second"], 3
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seconds = 4.0 if args.quick else 10.0
    raise_fd_limit()
    workdir = RESULTS / "step_engine"
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    with cleanup_on_exit():
        results["period"] = [
            loaded_run(workdir, "period-256", 256, "10ms", seconds, []),
            loaded_run(workdir, "period-1000", 1000, "50ms", seconds, []),
        ]
        results["cpu_per_step"] = [
            loaded_run(workdir, f"cpu-{n}", n, "20ms", seconds, []) for n in (64, 256, 1024)
        ]
        results["zero_latency"] = zero_latency_comparison(workdir, seconds, rounds=3)
    (RESULTS / "step_engine.json").write_text(json.dumps(results, indent=2))
    for section, rows in results.items():
        print(f"\n{section}")
        for row in rows:
            print("  " + "  ".join(f"{key}={value}" for key, value in row.items()))


if __name__ == "__main__":
    main()
