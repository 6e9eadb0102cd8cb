"""Running the load generators and merging what they report.

``loadgen.py`` runs as one or more child processes started on the same wall-clock tick;
``wrk``, when installed, measures the JSON request rates of (a) and (b).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadgen import Histogram
from procs import (
    BenchError,
    Child,
)

if TYPE_CHECKING:
    from bench import Bench

BENCH_DIR = Path(__file__).resolve().parent
LOADGEN = BENCH_DIR / "loadgen.py"


@dataclass
class LoadResult:
    """The merged report of one or more load-generator processes."""

    processes: int
    generator: str = "raw"
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    window_start: float = 0.0
    window_end: float = 0.0
    window_seconds: float = 0.0
    window_requests: int = 0
    window_chunks: int = 0
    chunks_total: int = 0
    peak_open: int = 0
    client_cpu_seconds: float = 0.0
    client_wall_seconds: float = 0.0
    client_window_cpu_seconds: float = 0.0
    client_max_process_cores: float = 0.0
    """The busiest generator process, in cores, over the measuring window."""
    late_start_seconds: float = 0.0
    percentiles: dict[str, float] = field(default_factory=dict)
    """Latency percentiles reported by wrk (it gives no histogram)."""
    latency: Histogram = field(default_factory=Histogram)
    ttft: Histogram = field(default_factory=Histogram)
    itl: Histogram = field(default_factory=Histogram)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def requests_per_second(self) -> float:
        return self.window_requests / self.window_seconds if self.window_seconds else math.nan

    @property
    def chunks_per_second(self) -> float:
        return self.window_chunks / self.window_seconds if self.window_seconds else math.nan

    @property
    def client_cores(self) -> float:
        """All generator processes together, in cores, over the measuring window."""
        if self.window_seconds and self.client_window_cpu_seconds:
            return self.client_window_cpu_seconds / self.window_seconds
        if self.client_wall_seconds:
            return self.client_cpu_seconds / self.client_wall_seconds
        return math.nan

    @property
    def client_run_cores(self) -> float:
        """All generator processes together, in cores, from their start to their end."""
        if self.client_wall_seconds:
            return self.client_cpu_seconds / self.client_wall_seconds
        return math.nan

    def add(self, report: dict[str, Any]) -> None:
        self.sent += int(report["sent"])
        self.ok += int(report["ok"])
        for kind, count in report["errors"].items():
            self.errors[kind] = self.errors.get(kind, 0) + int(count)
        self.error_samples.extend(report["error_samples"][: 5 - len(self.error_samples)])
        if report.get("prewarm_error"):
            self.errors["prewarm"] = self.errors.get("prewarm", 0) + 1
            self.error_samples.append(f"prewarm: {report['prewarm_error']}")
        window = report["window"]
        self.window_start, self.window_end = float(window["start"]), float(window["end"])
        self.window_seconds = float(window["seconds"])
        self.window_requests += int(report["window_requests"])
        self.window_chunks += int(report["window_chunks"])
        self.chunks_total += int(report["chunks_total"])
        self.peak_open += int(report["peak_open"])
        cpu, wall = float(report["cpu_seconds"]), float(report["wall_seconds"])
        self.client_cpu_seconds += cpu
        self.client_wall_seconds = max(self.client_wall_seconds, wall)
        window_cpu = float(report["window_cpu_seconds"])
        window_wall = float(report["window_wall_seconds"])
        self.client_window_cpu_seconds += window_cpu
        busiest = window_cpu / window_wall if window_wall > 0 else 0.0
        self.client_max_process_cores = max(self.client_max_process_cores, busiest)
        self.late_start_seconds = max(self.late_start_seconds, float(report["late_start_seconds"]))
        self.latency.merge(Histogram.from_json(report["latency"]))
        self.ttft.merge(Histogram.from_json(report["ttft"]))
        self.itl.merge(Histogram.from_json(report["itl"]))

    def summary(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "processes": self.processes,
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "window_seconds": self.window_seconds,
            "window_requests": self.window_requests,
            "window_chunks": self.window_chunks,
            "chunks_total": self.chunks_total,
            "peak_open_streams": self.peak_open,
            "client_cpu_seconds": round(self.client_cpu_seconds, 3),
            "client_cores": round(self.client_cores, 3),
            "client_run_cores": round(self.client_run_cores, 3),
            "client_max_process_cores": round(self.client_max_process_cores, 3),
            "late_start_seconds": round(self.late_start_seconds, 3),
        }


def split_evenly(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


def run_loadgen(
    bench: Bench,
    label: str,
    url: str,
    body: str,
    *,
    concurrency: int,
    duration: float,
    stream: bool = False,
    processes: int = 1,
    ramp: float = 0.0,
    warmup: float = 0.0,
    max_per_slot: int = 1_000_000,
    timings: bool = False,
    prewarm: bool = False,
    request_timeout: float = 30.0,
) -> LoadResult:
    """Run ``processes`` load generators in parallel, started on the same wall-clock tick."""
    shares = split_evenly(concurrency, processes)
    start_delay = 1.0 + 0.3 * len(shares) + (0.5 if prewarm else 0.0)
    start_at = time.time() + start_delay
    hard_timeout = start_delay + ramp + warmup + duration + request_timeout + 30.0
    children: list[Child] = []
    try:
        for index, share in enumerate(shares):
            argv = [
                sys.executable,
                str(LOADGEN),
                "--url",
                url,
                "--body",
                body,
                "--concurrency",
                str(share),
                "--ramp",
                str(ramp),
                "--warmup",
                str(warmup),
                "--duration",
                str(duration),
                "--max-per-slot",
                str(max_per_slot),
                "--start-at",
                repr(start_at),
                "--request-timeout",
                str(request_timeout),
                "--hard-timeout",
                str(hard_timeout),
            ]
            argv += ["--client", bench.client]
            argv += ["--stream"] if stream else []
            argv += ["--timings"] if timings else []
            argv += ["--prewarm"] if prewarm else []
            name = f"loadgen-{label}-{index}"
            children.append(
                Child(
                    name,
                    argv,
                    bench.workdir / f"{name}.log",
                    stdout_path=bench.workdir / f"{name}.json",
                )
            )
        deadline = time.perf_counter() + hard_timeout + 15.0
        result = LoadResult(processes=len(children), generator=bench.client)
        for child in children:
            code = child.wait(deadline - time.perf_counter())
            if code is None:
                raise BenchError(f"{child.name} did not finish in {hard_timeout:.0f}s")
            assert child.stdout_path is not None
            lines = child.stdout_path.read_text().strip().splitlines()
            report = json.loads(lines[-1]) if lines else {}
            if code != 0 or "fatal" in report or "sent" not in report:
                fatal = report.get("fatal", "no report")
                raise BenchError(child.failure(f"failed (exit {code}, {fatal})"))
            result.add(report)
        return result
    finally:
        for child in children:
            child.stop()


# -- wrk (optional, for the JSON request rates of (a) and (b)) --------------------------

WRK_LUA = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
local limit = {limit}
local seen = 0
function response(status, headers, body)
  seen = seen + 1
  if seen >= limit then wrk.thread:stop() end
end
"""


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_wrk_duration(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text.strip())
    if not match:
        return math.nan
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[match.group(2)]
    return float(match.group(1)) * scale


def run_wrk(
    bench: Bench, label: str, url: str, body: str, *, concurrency: int, duration: float
) -> LoadResult:
    """The JSON request rate with wrk: a short warm-up run, then the measured run."""
    wrk = shutil.which("wrk")
    assert wrk is not None
    threads = 2
    limit = max(1, int(200_000 * duration / threads))
    script = bench.workdir / f"wrk-{label}.lua"
    script.write_text(WRK_LUA.format(body=lua_string(body), limit=limit), encoding="utf-8")
    result = LoadResult(processes=1, generator="wrk")
    runs = [("warmup", max(1, math.ceil(bench.params.warmup))), ("measure", math.ceil(duration))]
    for phase, seconds in runs:
        out = bench.workdir / f"wrk-{label}-{phase}.txt"
        argv = [wrk, f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "--latency"]
        argv += ["-s", str(script), url]
        child = Child(f"wrk-{label}-{phase}", argv, bench.workdir / f"wrk-{label}.log", out)
        cpu_before = os.times()
        began = time.time()
        try:
            if child.wait(seconds + 30.0) is None:
                raise BenchError(f"wrk ({label}) did not finish in {seconds + 30}s")
        finally:
            child.stop()
        ended = time.time()
        cpu_after = os.times()
        if phase == "warmup":
            continue
        text = out.read_text(errors="replace")
        rate = re.search(r"Requests/sec:\s+([0-9.]+)", text)
        total = re.search(r"([0-9]+) requests in ([0-9.]+)(us|ms|s|m)", text)
        if not rate or not total:
            raise BenchError(f"cannot parse wrk output:\n{text[-1500:]}")
        elapsed = parse_wrk_duration(total.group(2) + total.group(3))
        result.window_seconds = elapsed
        result.window_requests = int(total.group(1))
        result.sent = result.ok = result.window_requests
        result.window_start, result.window_end = began, began + elapsed
        for quantile in ("50", "90", "99"):
            found = re.search(rf"^\s+{quantile}%\s+(\S+)$", text, re.M)
            if found:
                result.percentiles[quantile] = parse_wrk_duration(found.group(1))
        non_2xx = re.search(r"Non-2xx or 3xx responses:\s+([0-9]+)", text)
        if non_2xx:
            result.errors["non_2xx"] = int(non_2xx.group(1))
        sockets = re.search(
            r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)",
            text,
        )
        if sockets:
            for kind, count in zip(
                ("connect", "read", "write", "timeout"), sockets.groups(), strict=True
            ):
                if int(count):
                    result.errors[kind] = int(count)
        result.client_cpu_seconds = (cpu_after.children_user - cpu_before.children_user) + (
            cpu_after.children_system - cpu_before.children_system
        )
        result.client_wall_seconds = ended - began
        result.client_max_process_cores = result.client_cores
    return result
