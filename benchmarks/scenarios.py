"""The scenarios (a) to (g): each starts its servers, drives them and records the numbers."""

from __future__ import annotations

import contextlib
import json
import math
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import (
    FIDELITY_ITL,
    FIDELITY_TTFT,
    SCALE_ITL,
    Bench,
    hist_summary,
    ms,
    request_body,
)
from loads import LoadResult, run_loadgen, run_wrk
from procs import (
    BenchError,
    ProcSampler,
    Server,
    http_post,
    llmsim_command,
    proc_rss_kb,
    start_ceiling,
    start_llmsim,
)


def capture_payload(bench: Bench, server: Server, tokens: int) -> Path:
    """A real llmsim JSON body and SSE stream, saved for the ceiling app."""
    if tokens in bench.payloads:
        return bench.payloads[tokens]
    path = bench.payloads[tokens] = save_payload(bench.workdir, server, tokens)
    return path


def save_payload(workdir: Path, server: Server, tokens: int) -> Path:
    """Capture ``server``'s answers of ``tokens`` tokens into a payload file in ``workdir``."""
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
    path = workdir / f"ceiling-payload-{tokens}.json"
    path.write_text(json.dumps({"body": body.decode(), "writes": writes}), encoding="utf-8")
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
        Rate = Callable[[Bench, str, str, str], LoadResult]

        def step(
            key: str, rate: Rate, url: str, body: str, sampler: ProcSampler
        ) -> tuple[str, Callable[[], Measured]]:
            return key, lambda: Measured(rate(bench, key, url, body), sampler)

        plan: list[tuple[str, Callable[[], Measured]]] = []
        if "nonstream" in wanted:
            plan.append(step("nonstream", json_rate, llmsim.chat_url, plain, llmsim_sampler))
        if "ceiling" in wanted:
            ceiling = start_ceiling(bench.workdir, payload, env=bench.server_env())
            stack.callback(ceiling.child.stop)
            ceiling_sampler = stack.enter_context(ProcSampler(ceiling.child.pid))
            plan.append(step("ceiling-json", json_rate, ceiling.chat_url, plain, ceiling_sampler))
        if "stream" in wanted:
            plan.append(step("stream", stream_rate, llmsim.chat_url, streamed, llmsim_sampler))
        if "ceiling" in wanted:
            plan.append(
                step(
                    "ceiling-sse",
                    stream_rate,
                    ceiling.base_url + "/stream",
                    streamed,
                    ceiling_sampler,
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
