"""What the access log, JSON logs and the dashboard cost in throughput.

    python benchmarks/logging_overhead.py [--quick] [--rounds N] [--out DIR]

Runs the zero-latency throughput loads of the main suite ((b) non-streaming chat, (c)
streaming chat of 64 tokens, 64 concurrent) against llmsim started four ways:

    off        --no-access-log (what run.py measures)
    text       the default: one access line per request
    json       --log-format json: one JSON access record per request
    dashboard  --dashboard, with TTY_COMPATIBLE=1 so that frames are really drawn

The variants run back to back, each with a fresh server whose output goes to a file, and
the whole sequence is repeated ``--rounds`` times, so a slow spell on a shared machine
shows up as spread instead of as a difference between variants. Besides the rates, the
server's CPU time per request and per token is reported: it does not depend on how hard
the load generators managed to push. Results go to ``<out>/logging-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from bench import FULL, QUICK, Bench, request_body
from loads import LoadResult
from procs import BenchError, ProcSampler, child_env, cleanup_on_exit, start_llmsim
from report import machine_info
from scenarios import json_rate, stream_rate

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results"


@dataclass(frozen=True)
class Variant:
    name: str
    args: tuple[str, ...]
    access_log: bool
    env: dict[str, str] = field(default_factory=dict)


VARIANTS = (
    Variant("off", (), access_log=False),
    Variant("text", (), access_log=True),
    Variant("json", ("--log-format", "json"), access_log=True),
    Variant("dashboard", ("--dashboard",), access_log=True, env={"TTY_COMPATIBLE": "1"}),
)


@dataclass
class Sample:
    """One variant in one round."""

    requests_per_second: float
    tokens_per_second: float
    us_per_request: float | None
    us_per_token: float | None
    other_cores: float | None


def cpu_per_unit(sampler: ProcSampler, load: LoadResult, units: int) -> float | None:
    """Server CPU microseconds per request or token over the measuring window."""
    cores = sampler.cores_between(load.window_start, load.window_end)
    if cores is None or not units:
        return None
    return cores * load.window_seconds / units * 1e6


def other_load(sampler: ProcSampler, load: LoadResult) -> float | None:
    """Cores used by everything but the server and the generators (other people's work)."""
    machine = sampler.machine_cores_between(load.window_start, load.window_end)
    server = sampler.cores_between(load.window_start, load.window_end)
    if machine is None or server is None:
        return None
    return max(0.0, machine - server - load.client_cores)


def measure(bench: Bench, variant: Variant, round_index: int) -> Sample:
    label = f"{variant.name}-{round_index}"
    env = {**child_env(), **variant.env}
    server = start_llmsim(
        bench.workdir,
        f"llmsim-{label}",
        *variant.args,
        "--shutdown-timeout",
        "2s",
        access_log=variant.access_log,
        env=env,
    )
    try:
        tokens = bench.params.response_tokens
        with ProcSampler(server.child.pid) as sampler:
            plain = json_rate(
                bench, f"plain-{label}", server.chat_url, request_body(tokens, stream=False)
            )
            streamed = stream_rate(
                bench, f"stream-{label}", server.chat_url, request_body(tokens, stream=True)
            )
    finally:
        server.child.stop()
    errors = plain.error_count + streamed.error_count
    if errors:
        raise BenchError(f"{label}: {errors} failed requests: {plain.error_samples[:2]}")
    others = [other_load(sampler, plain), other_load(sampler, streamed)]
    return Sample(
        requests_per_second=plain.requests_per_second,
        tokens_per_second=streamed.chunks_per_second,
        us_per_request=cpu_per_unit(sampler, plain, plain.window_requests),
        us_per_token=cpu_per_unit(sampler, streamed, streamed.window_chunks),
        other_cores=max((o for o in others if o is not None), default=None),
    )


def spread(values: list[float], digits: int = 0) -> str:
    """Mean and range, the honest summary of a few runs on a shared machine."""
    if not values:
        return "n/a"
    low, high, mean = min(values), max(values), statistics.mean(values)
    return f"{mean:,.{digits}f} ({low:,.{digits}f}–{high:,.{digits}f})"


def relative(values: list[float], baseline: list[float]) -> str:
    if not values or not baseline:
        return "n/a"
    return f"{statistics.mean(values) / statistics.mean(baseline) - 1:+.1%}"


def render(samples: dict[str, list[Sample]]) -> str:
    base = samples.get("off", [])
    rows = [
        "| variant | non-streaming req/s, mean (range) | vs off | server µs/request "
        "| streaming tokens/s, mean (range) | vs off | server µs/token | other load, cores |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in samples.items():
        rps = [s.requests_per_second for s in runs]
        tps = [s.tokens_per_second for s in runs]
        upr = [s.us_per_request for s in runs if s.us_per_request is not None]
        upt = [s.us_per_token for s in runs if s.us_per_token is not None]
        others = [s.other_cores for s in runs if s.other_cores is not None]
        rows.append(
            f"| {name} | {spread(rps)} | {relative(rps, [s.requests_per_second for s in base])} "
            f"| {spread(upr)} | {spread(tps)} | "
            f"{relative(tps, [s.tokens_per_second for s in base])} | "
            f"{spread(upt, 2)} | {spread(others, 2)} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s windows instead of 5 s")
    parser.add_argument("--rounds", type=int, default=2, help="repeat every variant N times")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    args = parser.parse_args(argv)
    params = QUICK if args.quick else FULL
    samples: dict[str, list[Sample]] = {variant.name: [] for variant in VARIANTS}
    began = time.perf_counter()
    stamp = dt.datetime.now(dt.timezone.utc)
    with TemporaryDirectory(prefix="llmsim-logbench-") as tmp, cleanup_on_exit():
        bench = Bench(
            params=params,
            quick=args.quick,
            selected=set(),
            workdir=Path(tmp),
            generator="loadgen",
        )
        for round_index in range(1, max(1, args.rounds) + 1):
            for variant in VARIANTS:
                print(f"[logbench] {variant.name}, round {round_index}", file=sys.stderr)
                samples[variant.name].append(measure(bench, variant, round_index))
    table = render(samples)
    record: dict[str, Any] = {
        "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "elapsed_seconds": round(time.perf_counter() - began, 1),
        "params": {
            "duration": params.duration,
            "warmup": params.warmup,
            "concurrency": params.concurrency,
            "response_tokens": params.response_tokens,
            "rounds": args.rounds,
        },
        "machine": machine_info(),
        "samples": {name: [vars(s) for s in runs] for name, runs in samples.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"logging-{stamp.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(table)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
