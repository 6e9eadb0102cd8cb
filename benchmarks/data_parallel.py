"""Data-parallel backends compared: one process per instance (mp) or one event loop (inprocess).

    python benchmarks/data_parallel.py [--size 2] [--duration 4] [--only json stream timed]

Starts ``llmsim serve --data-parallel-size N --dp-ports`` (one port per rank) on each backend (and one plain instance
as the baseline), and runs the same bounded loads against it, one load-generator
process per instance port:

    json    non-streaming chat, 64 tokens, zero latency, 64 concurrent: requests/s
    long    the same with 1024 tokens: the server's work dominates the generator's
    stream  streaming chat, 64 tokens, zero latency, 64 concurrent: tokens/s
    timed   400 streams at TTFT 100 ms / ITL 10 ms: TTFT error p50/p99, mean ITL error

It also reports the server's CPU (the parent and all its children, in cores) and the
resident memory of all its processes. Every process is started here and stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from bench import hist_summary, request_body
from loads import LOADGEN, WRK_LUA, LoadResult, lua_string
from procs import (
    BenchError,
    Child,
    cleanup_on_exit,
    free_port,
    llmsim_command,
    proc_cpu_seconds,
    proc_rss_kb,
    wait_healthy,
)

TTFT, ITL = 0.100, 0.010
TIMED_TOKENS = 50
TIMED_STREAMS = 400


@dataclass(frozen=True)
class Setup:
    label: str
    args: tuple[str, ...]
    instances: int


def setups(size: int) -> list[Setup]:
    dp = ("--data-parallel-size", str(size), "--dp-ports")
    return [
        Setup("single instance", (), 1),
        Setup(f"{size} ranks, inprocess", (*dp, "--data-parallel-backend", "inprocess"), size),
        Setup(f"{size} ranks, mp", (*dp, "--data-parallel-backend", "mp"), size),
    ]


def tree_pids(pid: int) -> list[int]:
    """The process and its children (one level: the mp backend's instances)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(child) for child in children)]


def tree_cpu(pids: list[int]) -> float:
    return sum(proc_cpu_seconds(pid) or 0.0 for pid in pids)


def generators(
    workdir: Path, label: str, ports: list[int], body: str, *, stream: bool, **options: Any
) -> LoadResult:
    """One load generator per port, started on the same tick; their merged report."""
    concurrency = int(options.pop("concurrency"))
    start_at = time.time() + 1.0 + 0.3 * len(ports)
    children = []
    try:
        for index, port in enumerate(ports):
            argv = [
                sys.executable,
                str(LOADGEN),
                "--url",
                f"http://127.0.0.1:{port}/v1/chat/completions",
                "--body",
                body,
                "--concurrency",
                str(max(1, concurrency // len(ports))),
                "--start-at",
                repr(start_at),
                "--hard-timeout",
                "120",
                *(["--stream"] if stream else []),
                *(_option(key, value) for key, value in options.items()),
            ]
            name = f"loadgen-{label}-{index}"
            children.append(
                Child(name, argv, workdir / f"{name}.log", stdout_path=workdir / f"{name}.json")
            )
        result = LoadResult(processes=len(children))
        for child in children:
            if child.wait(150.0) != 0:
                raise BenchError(child.failure("failed"))
            assert child.stdout_path is not None
            result.add(json.loads(child.stdout_path.read_text().strip().splitlines()[-1]))
        return result
    finally:
        for child in children:
            child.stop()


def _option(key: str, value: Any) -> str:
    flag = "--" + key.replace("_", "-")
    return flag if value is True else f"{flag}={value}"


def json_load(workdir: Path, ports: list[int], duration: float) -> dict[str, Any]:
    if shutil.which("wrk"):
        return wrk_json(workdir, ports, duration)
    load = generators(
        workdir,
        "json",
        ports,
        request_body(64, stream=False),
        stream=False,
        concurrency=64,
        warmup=1.0,
        duration=duration,
    )
    return {
        "requests_per_s": round(load.requests_per_second),
        "latency": hist_summary(load.latency),
        "errors": load.error_count,
    }


def long_load(workdir: Path, ports: list[int], duration: float) -> dict[str, Any]:
    if not shutil.which("wrk"):
        raise BenchError("the long load needs wrk")
    return wrk_json(workdir, ports, duration, tokens=1024)


def wrk_json(workdir: Path, ports: list[int], duration: float, tokens: int = 64) -> dict[str, Any]:
    """wrk costs far less CPU per request than the aiohttp generator: one per port."""
    script = workdir / "wrk.lua"
    body = request_body(tokens, stream=False)
    script.write_text(WRK_LUA.format(body=lua_string(body), limit=10**9), encoding="utf-8")
    children = []
    try:
        for index, port in enumerate(ports):
            name = f"wrk-{index}"
            argv = ["wrk", "-t1", f"-c{64 // len(ports)}", f"-d{math.ceil(duration)}s"]
            argv += ["-s", str(script), f"http://127.0.0.1:{port}/v1/chat/completions"]
            children.append(
                Child(name, argv, workdir / f"{name}.log", stdout_path=workdir / f"{name}.txt")
            )
        rate, requests = 0.0, 0
        for child in children:
            if child.wait(duration + 30.0) != 0:
                raise BenchError(child.failure("failed"))
            assert child.stdout_path is not None
            text = child.stdout_path.read_text()
            found = re.search(r"Requests/sec:\s+([0-9.]+)", text)
            total = re.search(r"([0-9]+) requests in", text)
            if not found or not total:
                raise BenchError(child.failure("printed no rate"))
            rate += float(found.group(1))
            requests += int(total.group(1))
        return {"requests_per_s": round(rate), "requests": requests, "generator": "wrk"}
    finally:
        for child in children:
            child.stop()


def stream_load(workdir: Path, ports: list[int], duration: float) -> dict[str, Any]:
    load = generators(
        workdir,
        "stream",
        ports,
        request_body(64, stream=True),
        stream=True,
        concurrency=64,
        warmup=1.0,
        duration=duration,
    )
    return {"tokens_per_s": round(load.chunks_per_second), "errors": load.error_count}


def timed_load(workdir: Path, ports: list[int], duration: float) -> dict[str, Any]:
    expected = TTFT + ITL * (TIMED_TOKENS - 1)
    load = generators(
        workdir,
        "timed",
        ports,
        request_body(TIMED_TOKENS, stream=True),
        stream=True,
        concurrency=TIMED_STREAMS,
        ramp=expected,
        warmup=expected + 0.5,
        duration=duration,
        max_per_slot=math.ceil((expected + 0.5 + duration) / expected) + 2,
        timings=True,
        prewarm=True,
    )
    itl_error = (load.itl.mean - ITL) / ITL if load.itl.count else math.nan
    return {
        "ttft_error": hist_summary(load.ttft, TTFT),
        "itl_mean_relative_error": round(itl_error, 4),
        "errors": load.error_count,
    }


LOADS: dict[str, Callable[[Path, list[int], float], dict[str, Any]]] = {
    "json": json_load,
    "long": long_load,
    "stream": stream_load,
    "timed": timed_load,
}


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports that are free now."""
    for _ in range(100):
        base = free_port()
        if all(_port_is_free(base + offset) for offset in range(1, count)):
            return base
    raise BenchError(f"no {count} consecutive free ports")


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def measure(workdir: Path, setup: Setup, names: list[str], duration: float) -> dict[str, Any]:
    argv = [
        *llmsim_command(),
        "serve",
        "--port",
        "0",
        "--time-to-first-token",
        "0ms",
        "--max-running-requests",
        "1024",
        *setup.args,
    ]
    results: dict[str, Any] = {}
    for name in names:
        base = consecutive_free_ports(setup.instances)
        argv[argv.index("--port") + 1] = str(base)
        extra = ["--time-to-first-token", "100ms", "--inter-token-latency", "10ms"]
        slug = setup.label.replace(" ", "-").replace(",", "")
        child = Child(
            f"llmsim-{slug}-{name}",
            argv + (extra if name == "timed" else []),
            workdir / f"llmsim-{slug}-{name}.log",
        )
        try:
            ports = [base + rank for rank in range(setup.instances)]
            for port in ports:
                wait_healthy(child, f"http://127.0.0.1:{port}")
            pids = tree_pids(child.pid)
            rss = sum(proc_rss_kb(pid) or 0 for pid in pids)
            cpu, began = tree_cpu(pids), time.monotonic()
            # Two generator processes in every setup: a single instance gets both.
            targets = ports if len(ports) > 1 else ports * 2
            results[name] = LOADS[name](workdir, targets, duration)
            used = tree_cpu(pids) - cpu
            results[name]["server_cores"] = round(used / (time.monotonic() - began), 2)
            if results[name].get("requests"):
                # Independent of how much CPU the rest of the machine left the server.
                results[name]["server_us_per_request"] = round(
                    1e6 * used / results[name]["requests"]
                )
            results["idle_rss_mb"] = round(rss / 1024, 1)
            results["processes"] = len(pids)
        finally:
            child.stop()
    return results


def render(size: int, table: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"| setup (data-parallel size {size}) | processes | idle RSS "
        "| JSON requests/s: best (median) | JSON server CPU per request "
        "| 1024-token JSON requests/s: best (median) | 1024-token server CPU per request "
        "| stream tokens/s: best (median) | timed TTFT error p50 / p99 (best round) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in table.items():
        plain, long = row.get("json", {}), row.get("long", {})
        stream, timed = row.get("stream", {}), row.get("timed", {})
        ttft = timed.get("ttft_error", {})
        lines.append(
            f"| {label} | {row.get('processes', '-')} | {row.get('idle_rss_mb', '-')} MB "
            f"| {_rate(plain, 'requests_per_s')} | {_cost(plain)} "
            f"| {_rate(long, 'requests_per_s')} | {_cost(long)} "
            f"| {_rate(stream, 'tokens_per_s')} "
            f"| {ttft.get('p50_ms', '-')} / {ttft.get('p99_ms', '-')} ms |"
        )
    return "\n".join(lines)


def _rate(load: dict[str, Any], key: str) -> str:
    return f"{load[key]:,} ({load['median']:,.0f})" if key in load else "-"


def _cost(load: dict[str, Any]) -> str:
    cost = load.get("server_us_per_request")
    return f"{cost} µs" if cost is not None else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2, help="data-parallel size (default 2)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per load")
    parser.add_argument("--only", nargs="+", choices=sorted(LOADS), default=list(LOADS))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best kept")
    args = parser.parse_args(argv)
    rounds: dict[str, list[dict[str, Any]]] = {}
    with cleanup_on_exit(), TemporaryDirectory(prefix="llmsim-dp-") as scratch:
        for _ in range(max(1, args.rounds)):
            for setup in setups(args.size):
                try:
                    result = measure(Path(scratch), setup, args.only, args.duration)
                except BenchError as exc:
                    print(f"{setup.label}: {exc}", file=sys.stderr)
                    return 1
                rounds.setdefault(setup.label, []).append(result)
                print(f"{setup.label}: {json.dumps(result)}", file=sys.stderr)
    print(render(args.size, {label: best(results) for label, results in rounds.items()}))
    return 0


def best(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Each load's best round (the machine is shared: the best is closest to capacity),
    with the median rate and the median server CPU per request of all rounds."""
    merged = dict(results[0])
    keys: dict[str, Callable[[dict[str, Any]], float]] = {
        "json": lambda r: r["requests_per_s"],
        "long": lambda r: r["requests_per_s"],
        "stream": lambda r: r["tokens_per_s"],
        "timed": lambda r: -r["ttft_error"].get("p50_ms", math.inf),
    }
    for name, score in keys.items():
        found: list[dict[str, Any]] = [result[name] for result in results if name in result]
        if not found:
            continue
        top = max(found, key=score)
        merged[name] = dict(top)
        merged[name]["median"] = round(statistics.median(abs(score(r)) for r in found), 1)
        costs = [r["server_us_per_request"] for r in found if "server_us_per_request" in r]
        if costs:
            merged[name]["server_us_per_request"] = round(statistics.median(costs))
    return merged


if __name__ == "__main__":
    raise SystemExit(main())
