"""The llmsim benchmark suite: one command, every scenario, a JSON record and a table.

    python benchmarks/run.py [--quick] [--out DIR] [--only NAME ...]

Scenarios (``--only`` takes the name or the letter):

    a ceiling    a bare aiohttp app answering a same-sized body / pre-built SSE chunks
    b nonstream  llmsim non-streaming chat, zero latency, 64 concurrent
    c stream     llmsim streaming chat, 64 tokens a response, zero latency
    d fidelity   500 concurrent streams at TTFT 100 ms / ITL 10 ms: timing errors
    e scale      ramp to 5 000 open streams at ITL 50 ms: ITL drift, errors
    f startup    exec of ``llmsim serve`` to the first 200 on /health
    g memory     llmsim RSS idle and at the peak of (e), per in-flight stream

Every server and every load generator is a child process on 127.0.0.1, started here and
stopped by PID (SIGTERM, then SIGKILL). Results go to ``<out>/<timestamp>.json`` and
``<out>/latest.md``; see benchmarks/README.md for how to read them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from tempfile import TemporaryDirectory

from bench import FULL, QUICK, Bench, Params
from procs import (
    BenchError,
    cleanup_on_exit,
    raise_fd_limit,
)
from report import (
    TITLES,
    evaluate,
    finite,
    machine_info,
    render_markdown,
)
from scenarios import scenario_fidelity, scenario_scale, scenario_startup, scenario_throughput

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results"

SCENARIOS = {
    "a": "ceiling",
    "b": "nonstream",
    "c": "stream",
    "d": "fidelity",
    "e": "scale",
    "f": "startup",
    "g": "memory",
}


def _run_guarded(bench: Bench, key: str, action: Callable[[], None]) -> None:
    """Run one scenario; a failure is recorded and the run goes on."""
    began = time.perf_counter()
    print(f"[bench] {TITLES[key]} ...", file=sys.stderr, flush=True)
    try:
        action()
    except BenchError as exc:
        bench.results[key] = {"error": str(exc)}
        print(f"[bench] {TITLES[key]} failed: {exc}", file=sys.stderr, flush=True)
    bench.results.setdefault(key, {})["elapsed_seconds"] = round(time.perf_counter() - began, 2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark llmsim against a bare aiohttp ceiling.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios: " + ", ".join(f"{letter}={name}" for letter, name in SCENARIOS.items()),
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these scenarios (name or letter)"
    )
    parser.add_argument(
        "--generator",
        choices=("auto", "loadgen", "wrk"),
        default="auto",
        help="JSON request rates of (a)/(b): wrk if installed (auto), or benchmarks/loadgen.py",
    )
    parser.add_argument(
        "--client",
        choices=("raw", "aiohttp"),
        default="raw",
        help="HTTP client of benchmarks/loadgen.py: a lean protocol (raw) or aiohttp's",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="run llmsim and the ceiling app without uvloop and orjson, as a plain install "
        "does (the load generators keep them)",
    )
    parser.add_argument(
        "--fidelity-streams",
        type=int,
        metavar="N",
        help="streams of (d) instead of the preset's (500, or 200 with --quick): where the "
        "timing targets hold on this machine",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a target is missed, not only on errors"
    )
    return parser.parse_args(argv)


def params(args: argparse.Namespace) -> Params:
    preset = QUICK if args.quick else FULL
    if args.fidelity_streams is None:
        return preset
    return replace(preset, fidelity_streams=max(1, args.fidelity_streams))


def select(names: list[str] | None) -> set[str]:
    if not names:
        return set(SCENARIOS.values())
    chosen: set[str] = set()
    for raw in names:
        for name in raw.split(","):
            key = name.strip().lower()
            key = SCENARIOS.get(key, key)
            if key not in TITLES:
                raise SystemExit(f"unknown scenario {name!r}; choose from {sorted(TITLES)}")
            chosen.add(key)
    if "memory" in chosen:
        chosen.add("scale")  # memory is measured at the peak of (e)
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = select(args.only)
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "loadgen"
    elif generator == "wrk" and not shutil.which("wrk"):
        raise SystemExit("--generator wrk: wrk is not on PATH")
    began = time.perf_counter()
    stamp = dt.datetime.now(dt.timezone.utc)
    machine = machine_info()
    machine["open_files_limit"] = raise_fd_limit()
    with TemporaryDirectory(prefix="llmsim-bench-") as tmp, cleanup_on_exit():
        bench = Bench(
            params=params(args),
            quick=args.quick,
            selected=selected,
            workdir=Path(tmp),
            generator=generator,
            client=args.client,
            plain=args.plain,
        )
        if "startup" in selected:
            _run_guarded(bench, "startup", lambda: scenario_startup(bench))
        throughput = selected & {"ceiling", "nonstream", "stream"}
        if throughput:
            began_throughput = time.perf_counter()
            try:
                scenario_throughput(bench)
            except BenchError as exc:
                for key in throughput:
                    bench.results[key] = {"error": f"zero-latency runs: {exc}"}
            elapsed = round(time.perf_counter() - began_throughput, 2)
            for key in throughput:
                bench.results.setdefault(key, {})["elapsed_seconds"] = elapsed
        if "fidelity" in selected:
            _run_guarded(bench, "fidelity", lambda: scenario_fidelity(bench))
        if "scale" in selected:
            _run_guarded(bench, "scale", lambda: scenario_scale(bench))
            if "error" in bench.results.get("scale", {}):
                bench.results.pop("memory", None)
        machine["loadavg_end"] = list(os.getloadavg())
        evaluate(bench)
        if any(check.status == "ERROR" for check in bench.checks):
            logs = args.out / f"logs-{stamp.strftime('%Y%m%dT%H%M%SZ')}"
            shutil.copytree(tmp, logs, dirs_exist_ok=True)
            bench.notes.append(f"process logs of this run: {logs}")
        record = {
            "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "mode": "quick" if args.quick else "full",
            "elapsed_seconds": round(time.perf_counter() - began, 1),
            "generator_json_rates": generator,
            "client": args.client,
            "plain": args.plain,
            "params": asdict(bench.params),
            "machine": machine,
            "scenarios": bench.results,
            "checks": [check.__dict__ for check in bench.checks],
            "notes": list(dict.fromkeys(bench.notes)),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{stamp.strftime('%Y%m%dT%H%M%SZ')}.json"
    json_path.write_text(json.dumps(finite(record), indent=2, allow_nan=False) + "\n")
    markdown = render_markdown(bench, record)
    (args.out / "latest.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"wrote {json_path} and {args.out / 'latest.md'}", file=sys.stderr)
    statuses = {check.status for check in bench.checks}
    if "ERROR" in statuses or (args.strict and "FAIL" in statuses):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
