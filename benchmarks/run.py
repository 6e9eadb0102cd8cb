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
import contextlib
import datetime as dt
import json
import math
import os
import re
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from loadgen import Histogram
from procs import (
    BenchError,
    Child,
    ProcSampler,
    Server,
    cleanup_on_exit,
    http_post,
    llmsim_command,
    proc_rss_kb,
    raise_fd_limit,
    server_env,
    start_ceiling,
    start_llmsim,
)
from report import (
    SATURATED_CORES,
    TITLES,
    Report,
    evaluate,
    finite,
    machine_info,
    render_markdown,
)

BENCH_DIR = Path(__file__).resolve().parent
LOADGEN = BENCH_DIR / "loadgen.py"
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


# -- load generation ------------------------------------------------------------------


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


# -- the run --------------------------------------------------------------------------


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


def capture_payload(bench: Bench, server: Server, tokens: int) -> Path:
    """A real llmsim JSON body and SSE stream, saved for the ceiling app."""
    if tokens in bench.payloads:
        return bench.payloads[tokens]
    body = http_post(server.chat_url, request_body(tokens, stream=False))
    raw = http_post(server.chat_url, request_body(tokens, stream=True))
    writes: list[str] = []
    carry = ""
    for event in raw.decode().split("\n\n"):
        if not event:
            continue
        text = event + "\n\n"
        if '"content":""' in event:  # the role chunk goes out with the first token
            carry += text
            continue
        writes.append(carry + text)
        carry = ""
    path = bench.workdir / f"ceiling-payload-{tokens}.json"
    path.write_text(json.dumps({"body": body.decode(), "writes": writes}), encoding="utf-8")
    bench.payloads[tokens] = path
    return path


def throughput_metrics(load: LoadResult) -> dict[str, Any]:
    data: dict[str, Any] = {
        "requests_per_second": round(load.requests_per_second, 1),
        "errors": load.error_count,
    }
    if load.window_chunks:
        data["chunks_per_second"] = round(load.chunks_per_second, 1)
    if load.percentiles:
        data["latency_p50_ms"] = ms(load.percentiles.get("50", math.nan))
        data["latency_p99_ms"] = ms(load.percentiles.get("99", math.nan))
    elif load.latency.count:
        data["latency_p50_ms"] = ms(load.latency.percentile(50))
        data["latency_p99_ms"] = ms(load.latency.percentile(99))
    return data


def json_rate(bench: Bench, label: str, url: str, body: str) -> LoadResult:
    p = bench.params
    if bench.generator == "wrk":
        return run_wrk(bench, label, url, body, concurrency=p.concurrency, duration=p.duration)
    return run_loadgen(
        bench,
        label,
        url,
        body,
        processes=p.client_processes,
        concurrency=p.concurrency,
        warmup=p.warmup,
        duration=p.duration,
        max_per_slot=int(50_000 * (p.warmup + p.duration)),
    )


def stream_rate(bench: Bench, label: str, url: str, body: str) -> LoadResult:
    p = bench.params
    return run_loadgen(
        bench,
        label,
        url,
        body,
        stream=True,
        processes=p.client_processes,
        concurrency=p.concurrency,
        warmup=p.warmup,
        duration=p.duration,
        max_per_slot=int(5_000 * (p.warmup + p.duration)),
    )


def scenario_startup(bench: Bench) -> None:
    runs, stops = [], []
    for index in range(bench.params.startup_runs):
        server = start_llmsim(bench.workdir, f"startup-{index}", env=bench.server_env())
        runs.append(server.startup_seconds)
        stops.append(server.child.stop())
        time.sleep(0.2)
    bench.results["startup"] = {
        "runs_seconds": [round(value, 3) for value in runs],
        "median_seconds": round(statistics.median(runs), 3),
        "stop_seconds_median": round(statistics.median(stops), 3),
        "command": " ".join(
            [*llmsim_command(), "serve", "--host", "127.0.0.1", "--port", "N", "--no-access-log"]
        ),
    }


@dataclass
class Measured:
    """One throughput run and the sampler of the server it loaded."""

    load: LoadResult
    sampler: ProcSampler


def scenario_throughput(bench: Bench) -> None:
    """(a), (b) and (c): both servers up, the runs interleaved, the best of each kept.

    The machine is shared, so each run is repeated ``rounds`` times, alternating between
    llmsim and the ceiling app; the best round of each (its capacity) is reported and
    every round's rate is kept in the JSON.
    """
    p = bench.params
    wanted = [key for key in ("nonstream", "ceiling", "stream") if key in bench.selected]
    runs: dict[str, list[Measured]] = {}
    errors: dict[str, str] = {}
    llmsim = start_llmsim(
        bench.workdir, "llmsim-zero", "--shutdown-timeout", "2s", env=bench.server_env()
    )
    with contextlib.ExitStack() as stack:
        stack.callback(llmsim.child.stop)
        payload = capture_payload(bench, llmsim, p.response_tokens)
        llmsim_sampler = stack.enter_context(ProcSampler(llmsim.child.pid))
        plain, streamed = (
            request_body(p.response_tokens, stream=False),
            request_body(p.response_tokens, stream=True),
        )
        plan: list[tuple[str, Callable[[], Measured]]] = []
        if "nonstream" in wanted:
            plan.append(
                (
                    "nonstream",
                    lambda: Measured(
                        json_rate(bench, "nonstream", llmsim.chat_url, plain), llmsim_sampler
                    ),
                )
            )
        if "ceiling" in wanted:
            ceiling = start_ceiling(bench.workdir, payload, env=bench.server_env())
            stack.callback(ceiling.child.stop)
            ceiling_sampler = stack.enter_context(ProcSampler(ceiling.child.pid))
            plan.append(
                (
                    "ceiling-json",
                    lambda: Measured(
                        json_rate(bench, "ceiling-json", ceiling.chat_url, plain),
                        ceiling_sampler,
                    ),
                )
            )
        if "stream" in wanted:
            plan.append(
                (
                    "stream",
                    lambda: Measured(
                        stream_rate(bench, "stream", llmsim.chat_url, streamed), llmsim_sampler
                    ),
                )
            )
        if "ceiling" in wanted:
            plan.append(
                (
                    "ceiling-sse",
                    lambda: Measured(
                        stream_rate(bench, "ceiling-sse", ceiling.base_url + "/stream", streamed),
                        ceiling_sampler,
                    ),
                )
            )
        for round_index in range(p.rounds):
            for key, action in plan:
                if key in errors:
                    continue
                print(
                    f"[bench] {key}, round {round_index + 1} of {p.rounds} ...",
                    file=sys.stderr,
                    flush=True,
                )
                try:
                    runs.setdefault(key, []).append(action())
                except BenchError as exc:
                    errors[key] = str(exc)
        response_bytes = len(http_post(llmsim.chat_url, plain))

    def best(key: str, rate: Callable[[LoadResult], float]) -> tuple[Measured, list[float]]:
        rates = [rate(item.load) for item in runs[key]]
        return runs[key][rates.index(max(rates))], [round(value, 1) for value in rates]

    def requests(load: LoadResult) -> float:
        return load.requests_per_second

    def chunks(load: LoadResult) -> float:
        return load.chunks_per_second

    if "nonstream" in wanted:
        if "nonstream" in errors:
            bench.results["nonstream"] = {"error": errors["nonstream"]}
        else:
            top, rates = best("nonstream", requests)
            bench.results["nonstream"] = {
                **throughput_metrics(top.load),
                "rounds_requests_per_second": rates,
                "response_bytes": response_bytes,
                "load": bench.record_load("nonstream", top.load, top.sampler, throughput=True),
            }
    if "stream" in wanted:
        if "stream" in errors:
            bench.results["stream"] = {"error": errors["stream"]}
        else:
            top, rates = best("stream", chunks)
            bench.results["stream"] = {
                "tokens_per_second": round(top.load.chunks_per_second, 1),
                "streams_per_second": round(top.load.requests_per_second, 1),
                "rounds_tokens_per_second": rates,
                "errors": top.load.error_count,
                "load": bench.record_load("stream", top.load, top.sampler, throughput=True),
            }
    if "ceiling" in wanted:
        failed = [errors[key] for key in ("ceiling-json", "ceiling-sse") if key in errors]
        if failed:
            bench.results["ceiling"] = {"error": failed[0]}
        else:
            top_json, json_rates = best("ceiling-json", requests)
            top_sse, sse_rates = best("ceiling-sse", chunks)
            bench.results["ceiling"] = {
                **throughput_metrics(top_json.load),
                "rounds_requests_per_second": json_rates,
                "chunks_per_second": round(top_sse.load.chunks_per_second, 1),
                "streams_per_second": round(top_sse.load.requests_per_second, 1),
                "rounds_chunks_per_second": sse_rates,
                "stream_errors": top_sse.load.error_count,
                "load_json": bench.record_load(
                    "ceiling-json", top_json.load, top_json.sampler, throughput=True
                ),
                "load_sse": bench.record_load(
                    "ceiling-sse", top_sse.load, top_sse.sampler, throughput=True
                ),
            }


def fidelity_load(bench: Bench, label: str, url: str) -> LoadResult:
    """The (d) load: every slot streams back to back, slots staggered over one stream."""
    p = bench.params
    expected = FIDELITY_TTFT + FIDELITY_ITL * (p.fidelity_tokens - 1)
    return run_loadgen(
        bench,
        label,
        url,
        request_body(p.fidelity_tokens, stream=True),
        stream=True,
        processes=bench.generator_processes(p.fidelity_processes),
        concurrency=p.fidelity_streams,
        ramp=expected,
        warmup=expected + 0.5,
        duration=p.fidelity_duration,
        max_per_slot=math.ceil((expected + 0.5 + p.fidelity_duration) / expected) + 2,
        timings=True,
        prewarm=True,
        request_timeout=30.0,
    )


def timing_summary(load: LoadResult) -> dict[str, Any]:
    itl_error = (load.itl.mean - FIDELITY_ITL) / FIDELITY_ITL if load.itl.count else math.nan
    return {
        "ttft_error": hist_summary(load.ttft, FIDELITY_TTFT),
        "itl": hist_summary(load.itl),
        "itl_mean_relative_error": round(itl_error, 5),
        "tokens_per_second": round(load.chunks_per_second, 1),
        "errors": load.error_count,
    }


def scenario_fidelity(bench: Bench) -> None:
    p = bench.params
    streams = p.fidelity_streams
    server = start_llmsim(
        bench.workdir,
        "llmsim-fidelity",
        "--time-to-first-token",
        f"{FIDELITY_TTFT * 1000:g}ms",
        "--inter-token-latency",
        f"{FIDELITY_ITL * 1000:g}ms",
        "--max-running-requests",
        str(max(1024, 2 * streams)),
        "--max-waiting-queue-length",
        str(max(1000, 2 * streams)),
        "--shutdown-timeout",
        "2s",
        env=bench.server_env(),
    )
    try:
        payload = capture_payload(bench, server, p.fidelity_tokens)
        with ProcSampler(server.child.pid) as sampler:
            load = fidelity_load(bench, "fidelity", server.chat_url)
        info = bench.record_load("fidelity", load, sampler)
    finally:
        server.child.stop()
    bench.results["fidelity"] = {
        "streams": streams,
        "tokens_per_stream": p.fidelity_tokens,
        "configured_ttft_ms": ms(FIDELITY_TTFT),
        "configured_itl_ms": ms(FIDELITY_ITL),
        **timing_summary(load),
        "load": info,
    }
    # The same schedule and load against the bare app: the platform's share of the error.
    baseline = start_ceiling(
        bench.workdir,
        payload,
        "--ttft",
        str(FIDELITY_TTFT),
        "--itl",
        str(FIDELITY_ITL),
        name="ceiling-timed",
        env=bench.server_env(),
    )
    try:
        with ProcSampler(baseline.child.pid) as sampler:
            load = fidelity_load(bench, "fidelity-baseline", baseline.base_url + "/timed")
        info = bench.record_load("fidelity-baseline", load, sampler)
    finally:
        baseline.child.stop()
    bench.results["fidelity"]["baseline"] = {**timing_summary(load), "load": info}


def scenario_scale(bench: Bench) -> None:
    p = bench.params
    streams = p.scale_streams
    server = start_llmsim(
        bench.workdir,
        "llmsim-scale",
        "--inter-token-latency",
        f"{SCALE_ITL * 1000:g}ms",
        "--max-running-requests",
        str(max(5000, streams)),
        "--max-waiting-queue-length",
        str(max(5000, streams)),
        "--shutdown-timeout",
        "2s",
        env=bench.server_env(),
    )
    stream_seconds = SCALE_ITL * (p.scale_tokens - 1)
    open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if open_files < streams + 256:
        bench.notes.append(
            f"(e): the open-files limit is {open_files}, too low for {streams:,} streams "
            "(raise the hard limit, e.g. `ulimit -Hn`)."
        )
    try:
        payload = capture_payload(bench, server, p.scale_tokens)
        rss_started = proc_rss_kb(server.child.pid) or 0
        http_post(server.chat_url, request_body(4, stream=True))
        time.sleep(0.3)
        rss_idle = proc_rss_kb(server.child.pid) or 0
        sampler = ProcSampler(server.child.pid, metrics_url=server.base_url + "/metrics")
        with sampler:
            load = scale_load(bench, "scale", server.chat_url, stream_seconds)
    finally:
        server.child.stop()
    drift = (load.itl.mean - SCALE_ITL) / SCALE_ITL if load.itl.count else math.nan
    peak_rss = max(sampler.peak_rss_kb, rss_idle)
    held = sampler.peak_running
    # Every stream is open from the end of the ramp until the first one finishes.
    hold_start = load.window_start + p.scale_ramp
    hold_end = max(load.window_start + stream_seconds, hold_start + 0.5)
    hold_cores = sampler.cores_between(hold_start, hold_end)
    bench.results["scale"] = {
        "streams": streams,
        "tokens_per_stream": p.scale_tokens,
        "configured_itl_ms": ms(SCALE_ITL),
        "ramp_seconds": p.scale_ramp,
        "required_tokens_per_second": round(streams / SCALE_ITL),
        "peak_running": held,
        "client_peak_open_streams": load.peak_open,
        "itl": hist_summary(load.itl),
        "itl_mean_drift": round(drift, 5),
        "ttft": hist_summary(load.ttft),
        "errors": load.error_count,
        "completed": load.ok,
        "server_cores_while_held": None if hold_cores is None else round(hold_cores, 3),
        "load": bench.record_load("scale", load, sampler),
    }
    bench.results["scale"]["baseline"] = scale_baseline(bench, payload, stream_seconds)
    bench.results["memory"] = {
        "rss_after_start_kb": rss_started,
        "rss_idle_kb": rss_idle,
        "rss_peak_kb": peak_rss,
        "peak_running": held,
        "kb_per_stream": round((peak_rss - rss_idle) / held, 2) if held else None,
    }


def scale_load(bench: Bench, name: str, url: str, stream_seconds: float) -> LoadResult:
    """Open (e)'s streams against ``url``: one per slot, all opened within the ramp."""
    p = bench.params
    return run_loadgen(
        bench,
        name,
        url,
        request_body(p.scale_tokens, stream=True),
        stream=True,
        processes=bench.generator_processes(p.scale_processes),
        concurrency=p.scale_streams,
        ramp=p.scale_ramp,
        duration=p.scale_ramp + 0.5,
        max_per_slot=1,
        timings=True,
        request_timeout=stream_seconds * 8 + 60.0,
    )


def scale_baseline(bench: Bench, payload: Path, stream_seconds: float) -> dict[str, Any]:
    """The same streams against the bare app sleeping the same schedule: what the machine
    allows when the server does nothing but sleep and write."""
    baseline = start_ceiling(
        bench.workdir,
        payload,
        "--ttft",
        "0",
        "--itl",
        str(SCALE_ITL),
        name="ceiling-scale",
        env=bench.server_env(),
    )
    try:
        with ProcSampler(baseline.child.pid) as sampler:
            load = scale_load(bench, "scale-baseline", baseline.base_url + "/timed", stream_seconds)
        info = bench.record_load("scale-baseline", load, sampler)
    finally:
        baseline.child.stop()
    drift = (load.itl.mean - SCALE_ITL) / SCALE_ITL if load.itl.count else math.nan
    return {
        "client_peak_open_streams": load.peak_open,
        "itl": hist_summary(load.itl),
        "itl_mean_drift": round(drift, 5),
        "ttft": hist_summary(load.ttft),
        "errors": load.error_count,
        "load": info,
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
