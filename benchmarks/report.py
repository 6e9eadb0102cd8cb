"""Targets, verdicts and the markdown report of a benchmark run."""

from __future__ import annotations

import contextlib
import math
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

TITLES = {
    "ceiling": "(a) ceiling",
    "nonstream": "(b) non-streaming",
    "stream": "(c) streaming",
    "fidelity": "(d) timing fidelity",
    "scale": "(e) scale",
    "startup": "(f) start-up",
    "memory": "(g) memory",
}
SATURATED_CORES = 0.85
"""A single-threaded process using this share of a core or more is at its limit."""


@dataclass
class Check:
    scenario: str
    metric: str
    value: str
    target: str = ""
    status: str = ""


@dataclass(kw_only=True)
class Report:
    """What a run measured and what the report says about it."""

    quick: bool
    generator: str
    """What measured the JSON request rates of (a) and (b): wrk, or loadgen's client."""
    client: str = "raw"
    """The HTTP client of benchmarks/loadgen.py: raw or aiohttp."""
    plain: bool = False
    """The servers ran without uvloop and orjson (``--plain``)."""
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per scenario: its metrics, or ``{"error": ...}``."""
    loads: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per load run: generator and server CPU, errors."""
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- verdicts and the report -----------------------------------------------------------


def verdict(ok: bool | None) -> str:
    if ok is None:
        return "n/a"
    return "PASS" if ok else "FAIL"


def fmt(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}{suffix}"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator or math.isnan(numerator) or math.isnan(denominator):
        return None
    return numerator / denominator


def evaluate(bench: Report) -> None:
    r, checks = bench.results, bench.checks
    add = checks.append
    ceiling = r.get("ceiling", {})
    if "error" in ceiling:
        add(Check(TITLES["ceiling"], "error", first_line(ceiling["error"]), "", "ERROR"))
    elif "requests_per_second" in ceiling:
        add(Check(TITLES["ceiling"], "JSON requests/s", fmt(ceiling["requests_per_second"])))
        add(Check(TITLES["ceiling"], "SSE chunks/s", fmt(ceiling["chunks_per_second"])))

    plain = r.get("nonstream", {})
    if "error" in plain:
        add(Check(TITLES["nonstream"], "error", first_line(plain["error"]), "", "ERROR"))
    elif "requests_per_second" in plain:
        share = ratio(plain["requests_per_second"], ceiling.get("requests_per_second"))
        plain["ratio_to_ceiling"] = None if share is None else round(share, 4)
        add(
            Check(
                TITLES["nonstream"],
                "requests/s (share of (a))",
                f"{fmt(plain['requests_per_second'])} ({fmt(share and share * 100, 1, ' %')})",
                "≥ 75 % of (a)",
                verdict(None if share is None else share >= 0.75),
            )
        )
        add(
            Check(
                TITLES["nonstream"],
                "latency p50 / p99",
                f"{fmt(plain.get('latency_p50_ms'), 2)} / {fmt(plain.get('latency_p99_ms'), 2)} ms",
            )
        )
        own = cpu_per_unit(bench.loads.get("nonstream"), "window_requests")
        bare = cpu_per_unit(bench.loads.get("ceiling-json"), "window_requests")
        plain["server_cpu_us_per_request"] = own
        add(
            Check(
                TITLES["nonstream"],
                "server CPU per request: llmsim / (a)",
                f"{fmt(own, 0)} / {fmt(bare, 0)} µs",
            )
        )
        _error_check(add, "nonstream", plain["errors"])

    streamed = r.get("stream", {})
    if "error" in streamed:
        add(Check(TITLES["stream"], "error", first_line(streamed["error"]), "", "ERROR"))
    elif "tokens_per_second" in streamed:
        rate = streamed["tokens_per_second"]
        share = ratio(rate, ceiling.get("chunks_per_second"))
        streamed["ratio_to_ceiling"] = None if share is None else round(share, 4)
        add(Check(TITLES["stream"], "tokens/s", fmt(rate), "≥ 50,000", verdict(rate >= 50_000)))
        add(
            Check(
                TITLES["stream"],
                "share of (a) chunks/s",
                fmt(share and share * 100, 1, " %"),
                "≥ 60 %",
                verdict(None if share is None else share >= 0.60),
            )
        )
        own = cpu_per_unit(bench.loads.get("stream"), "window_chunks")
        bare = cpu_per_unit(bench.loads.get("ceiling-sse"), "window_chunks")
        streamed["server_cpu_us_per_token"] = own
        add(
            Check(
                TITLES["stream"],
                "server CPU per token: llmsim / (a)",
                f"{fmt(own, 1)} / {fmt(bare, 1)} µs",
            )
        )
        _error_check(add, "stream", streamed["errors"])

    fidelity = r.get("fidelity", {})
    if "error" in fidelity:
        add(Check(TITLES["fidelity"], "error", first_line(fidelity["error"]), "", "ERROR"))
    elif "ttft_error" in fidelity:
        ttft, itl = fidelity["ttft_error"], fidelity["itl"]
        title = f"{TITLES['fidelity']}, {fidelity['streams']} streams"
        if fidelity["streams"] != 500:
            bench.notes.append(
                f"(d) ran at {fidelity['streams']} streams; the targets are set at 500."
            )
        p50, p99 = ttft.get("p50_ms"), ttft.get("p99_ms")
        add(
            Check(
                title,
                "TTFT error p50",
                fmt(p50, 2, " ms"),
                "≤ 2 ms",
                verdict(None if p50 is None else p50 <= 2.0),
            )
        )
        add(
            Check(
                title,
                "TTFT error p99",
                fmt(p99, 2, " ms"),
                "≤ 10 ms",
                verdict(None if p99 is None else p99 <= 10.0),
            )
        )
        add(Check(title, "TTFT error mean", fmt(ttft.get("mean_ms"), 2, " ms")))
        add(
            Check(
                title,
                "ITL p50 / p99 / mean",
                f"{fmt(itl.get('p50_ms'), 2)} / {fmt(itl.get('p99_ms'), 2)} / "
                f"{fmt(itl.get('mean_ms'), 3)} ms (configured {fidelity['configured_itl_ms']:g})",
            )
        )
        error = fidelity["itl_mean_relative_error"]
        add(
            Check(
                title,
                "mean ITL relative error",
                fmt(error * 100 if not math.isnan(error) else None, 2, " %"),
                "within ±3 %",
                verdict(None if math.isnan(error) else abs(error) <= 0.03),
            )
        )
        base = fidelity.get("baseline", {})
        if base:
            base_ttft, base_error = base["ttft_error"], base["itl_mean_relative_error"]
            add(
                Check(
                    title,
                    "bare app, same schedule and load: TTFT error p50 / p99, mean ITL error",
                    f"{fmt(base_ttft.get('p50_ms'), 2)} / {fmt(base_ttft.get('p99_ms'), 2)} ms, "
                    f"{fmt(base_error * 100 if not math.isnan(base_error) else None, 2, ' %')}",
                )
            )
        add(
            Check(
                title,
                "tokens/s delivered / server CPU",
                f"{fmt(fidelity['tokens_per_second'])} / "
                f"{fmt(fidelity['load']['server_cores'], 2)} cores",
            )
        )
        _error_check(add, "fidelity", fidelity["errors"], title)

    scale = r.get("scale", {})
    if "error" in scale:
        add(Check(TITLES["scale"], "error", first_line(scale["error"]), "", "ERROR"))
    elif "peak_running" in scale:
        title = f"{TITLES['scale']}, {scale['streams']:,} streams"
        held = scale["peak_running"]
        add(
            Check(
                title,
                "streams held (peak running)",
                fmt(held),
                f"{scale['streams']:,}",
                verdict(held >= scale["streams"]),
            )
        )
        drift = scale["itl_mean_drift"]
        itl = scale["itl"]
        add(
            Check(
                title,
                "mean ITL drift",
                f"{fmt(drift * 100 if not math.isnan(drift) else None, 2, ' %')} "
                f"(mean {fmt(itl.get('mean_ms'), 2)} ms, p99 {fmt(itl.get('p99_ms'), 1)} ms)",
                "within ±10 %",
                verdict(None if math.isnan(drift) else abs(drift) <= 0.10),
            )
        )
        add(Check(title, "errors", fmt(scale["errors"]), "0", verdict(scale["errors"] == 0)))
        ttft = scale["ttft"]
        add(
            Check(
                title,
                "time to first token p50 / p99 (configured 0)",
                f"{fmt(ttft.get('p50_ms'), 1)} / {fmt(ttft.get('p99_ms'), 1)} ms",
            )
        )
        base = scale.get("baseline")
        if base:
            base_drift = base["itl_mean_drift"]
            add(
                Check(
                    title,
                    "bare app, same streams: ITL drift, TTFT p50 / p99",
                    f"{fmt(base_drift * 100 if not math.isnan(base_drift) else None, 2, ' %')}, "
                    f"{fmt(base['ttft'].get('p50_ms'), 1)} / "
                    f"{fmt(base['ttft'].get('p99_ms'), 1)} ms "
                    f"(server {fmt(base['load']['server_cores'], 2)} cores)",
                )
            )
        add(
            Check(
                title,
                "token rate needed / server CPU",
                f"{fmt(scale['required_tokens_per_second'])} tokens/s / "
                f"{fmt(scale['server_cores_while_held'], 2)} cores",
            )
        )
        load = scale["load"]
        add(
            Check(
                title,
                "client CPU (processes)",
                f"{fmt(load['client_cores'], 2)} cores ({load['processes']} processes)",
            )
        )
        held_cores = scale["server_cores_while_held"]
        if held_cores is not None and held_cores >= SATURATED_CORES:
            bench.notes.append(
                f"(e): the server used {held_cores:.2f} of a core while all streams were open "
                f"({scale['required_tokens_per_second']:,} tokens/s needed): it was saturated, "
                "so the ITL drift is llmsim's per-token cost showing."
            )
        if bench.quick:
            bench.notes.append(
                f"(e) ran at {scale['streams']:,} streams (--quick); the full run holds 5,000."
            )

    startup = r.get("startup", {})
    if "error" in startup:
        add(Check(TITLES["startup"], "error", first_line(startup["error"]), "", "ERROR"))
    elif "median_seconds" in startup:
        median = startup["median_seconds"]
        add(
            Check(
                f"{TITLES['startup']}, {len(startup['runs_seconds'])} runs",
                "exec → first 200 on /health (median)",
                fmt(median, 3, " s"),
                "≤ 1.0 s",
                verdict(median <= 1.0),
            )
        )
        add(
            Check(
                f"{TITLES['startup']}, {len(startup['runs_seconds'])} runs",
                "SIGTERM → exit, idle (median)",
                fmt(startup["stop_seconds_median"], 3, " s"),
            )
        )

    memory = r.get("memory", {})
    if "kb_per_stream" in memory:
        per = memory["kb_per_stream"]
        add(
            Check(
                TITLES["memory"],
                "RSS idle → peak of (e)",
                f"{fmt(memory['rss_idle_kb'] / 1024, 1)} → {fmt(memory['rss_peak_kb'] / 1024, 1)} MiB",
            )
        )
        add(
            Check(
                TITLES["memory"],
                "per in-flight stream",
                fmt(per, 1, " KB"),
                "≤ 20 KB",
                verdict(None if per is None else per <= 20.0),
            )
        )


def cpu_per_unit(load: dict[str, Any] | None, unit: str) -> float | None:
    """Server CPU microseconds per request or chunk over a run's measuring window."""
    if not load or not load.get(unit) or load.get("server_cores") is None:
        return None
    cpu = float(load["server_cores"]) * float(load["window_seconds"])
    return cpu / float(load[unit]) * 1e6


def first_line(text: str, limit: int = 120) -> str:
    lines = text.strip().splitlines()
    return lines[0][:limit] if lines else ""


def _error_check(add: Callable[[Check], None], key: str, errors: int, title: str = "") -> None:
    if errors:
        add(Check(title or TITLES[key], "errors", fmt(errors), "0", "FAIL"))


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "llmsim": version("llmsim"),
        "aiohttp": version("aiohttp"),
        "uvloop": version("uvloop"),
        "orjson": version("orjson"),
        "loadavg_start": list(os.getloadavg()),
    }


def cell_text(text: str) -> str:
    """A table cell on one line, with its pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def render_markdown(bench: Report, record: dict[str, Any]) -> str:
    info = record["machine"]
    extras = ", ".join(name for name in ("uvloop", "orjson") if info.get(name)) or "no extras"
    if bench.plain:
        extras = "--plain: servers without uvloop and orjson, asyncio and json"
    lines = [
        "# llmsim benchmark results",
        "",
        f"- run: {record['timestamp']} ({'quick' if bench.quick else 'full'}), "
        f"{record['elapsed_seconds']:.0f} s",
        f"- llmsim {info['llmsim']} ({extras}), Python {info['python']}, aiohttp {info['aiohttp']}",
        f"- machine: {info['cpus']} CPUs ({info['cpu_model'] or 'unknown'}), "
        f"load average {info['loadavg_start'][0]:.2f} at start, "
        f"{info['loadavg_end'][0]:.2f} at end",
    ]
    if {"ceiling", "nonstream"} & bench.results.keys():
        lines.append(
            f"- JSON request rates of (a) and (b) measured with: {bench.generator}; "
            f"everything else with benchmarks/loadgen.py ({bench.client} client)"
        )
    lines += [
        "",
        "| Scenario | Metric | Value | Target | Result |",
        "|---|---|---|---|---|",
    ]
    for check in bench.checks:
        cells = (check.scenario, check.metric, check.value, check.target, check.status)
        lines.append("| " + " | ".join(cell_text(cell) for cell in cells) + " |")
    if bench.loads:
        lines += [
            "",
            "## Load generator and server CPU",
            "",
            "CPU in cores (1.00 = one core busy for the whole window). The load generators are "
            "separate processes on the same machine; other load is what the rest of the "
            "machine used meanwhile (from /proc/stat).",
            "",
            "| Run | Generator | Processes | Client CPU | Busiest client process | "
            "Server CPU | Other load | Errors |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key, load in bench.loads.items():
            errors = sum(load["errors"].values())
            lines.append(
                f"| {key} | {load['generator']} | {load['processes']} | "
                f"{fmt(load['client_cores'], 2)} | {fmt(load['client_max_process_cores'], 2)} | "
                f"{fmt(load['server_cores'], 2)} | {fmt(load['other_cores'], 2)} | {errors} |"
            )
    if bench.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {note}" for note in dict.fromkeys(bench.notes)]
    lines.append("")
    return "\n".join(lines)


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, so the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value
