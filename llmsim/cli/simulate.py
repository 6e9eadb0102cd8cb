"""``llmsim simulate``: a workload through simulated instances behind a router, in virtual
time. The work is in :mod:`llmsim.simulation`; this module reads options and prints."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from llmsim.cli.options import CONFIG_FILE_OPTION, PROFILE_OPTION, err, fail, load_or_exit
from llmsim.cli.simulate_report import summary_table, sweep_table
from llmsim.settings.model import Settings
from llmsim.simulation import plots
from llmsim.simulation.results import SLO, SLOError
from llmsim.simulation.routers import ROUTERS
from llmsim.simulation.run import Result, Setup, Workload
from llmsim.simulation.run import simulate as run_simulation
from llmsim.simulation.search import Grid, SearchError, fewest_replicas, max_rate
from llmsim.simulation.synthetic import Lengths, Synthetic, WorkloadError
from llmsim.simulation.traces import DatasetWorkload, RecordingWorkload, TraceWorkload

EXAMPLES = """
[bold]Examples[/bold]

  [dim]# 4 replicas of a profile at 20 requests/s for a minute, least-requests routing[/dim]
  llmsim simulate -p llama-3.1-8b-a100 --replicas 4 --router least-requests \\
    --rate 20 --duration 60

  [dim]# shared system prompts: does prefix-affinity routing beat random?[/dim]
  llmsim simulate -p llama-3.1-8b-a100 --replicas 4 --router prefix-affinity \\
    --num-prefixes 8 --prefix-len 1000 --rate 30 --num-requests 2000

  [dim]# a ShareGPT dataset at 10 requests/s, with an SLO, results to a directory[/dim]
  llmsim simulate -p llama-3.1-8b-a100 --dataset sharegpt.json --rate 10 --num-requests 500 \\
    --slo ttft=500ms,tpot=50ms --output out/

  [dim]# a trace file, or a recording from `llmsim record` twice as fast[/dim]
  llmsim simulate -p llama-3.1-8b-a100 --trace trace.jsonl
  llmsim simulate -p llama-3.1-8b-a100 --recording rec.jsonl --replay-speed 2

  [dim]# latency versus load; the highest rate one replica holds; the replicas 50 req/s need[/dim]
  llmsim simulate -p llama-3.1-8b-a100 --sweep rate=1:64:x2 --num-requests 500
  llmsim simulate -p llama-3.1-8b-a100 --find max-rate --slo ttft=500ms,tpot=50ms \\
    --num-requests 500
  llmsim simulate -p llama-3.1-8b-a100 --find replicas --rate 50 --slo ttft=500ms \\
    --num-requests 1000

  [dim]# a fleet file's instances, and what a million output tokens cost[/dim]
  llmsim simulate --fleet fleet.toml --router least-kv-usage --rate 20 --cost-per-hour 2.5

  [dim]# three LoRA adapters sharing two slots, each switch loading for 200 ms[/dim]
  llmsim simulate -p llama-3.1-8b-a100 --set lora=a,b,c --set max_loras=2 \\
    --set lora_load_latency=200ms --adapters a,b,c --rate 10
"""

WORKLOAD, SYSTEM, RESULTS, QUESTIONS = "Workload", "System under test", "Results", "Questions"


def simulate(
    profile: Annotated[str | None, PROFILE_OPTION] = None,
    config: Annotated[str | None, CONFIG_FILE_OPTION] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a setting, e.g. --set max_running_requests=64 (repeatable).",
            metavar="KEY=VALUE",
            rich_help_panel=SYSTEM,
        ),
    ] = None,
    replicas: Annotated[
        int, typer.Option(min=1, max=4096, help="Instances.", rich_help_panel=SYSTEM)
    ] = 1,
    fleet: Annotated[
        Path | None,
        typer.Option(
            help="A fleet file as `llmsim fleet` reads it: one simulated engine per instance "
            "and data-parallel rank, each with its own settings (instead of --replicas).",
            metavar="FILE",
            rich_help_panel=SYSTEM,
        ),
    ] = None,
    prefill_replicas: Annotated[
        int,
        typer.Option(
            min=0,
            max=4096,
            help="P/D: prefill instances in front of the others, which then only decode and "
            "receive the prompt's KV cache (kv_cache_transfer_latency and "
            "kv_cache_transfer_time_per_token settings).",
            rich_help_panel=SYSTEM,
        ),
    ] = 0,
    prefill_profile: Annotated[
        str | None,
        typer.Option(
            help="P/D: the prefill instances' profile (default: the same settings).",
            metavar="NAME",
            rich_help_panel=SYSTEM,
        ),
    ] = None,
    router: Annotated[
        str,
        typer.Option(help="Routing policy: " + ", ".join(ROUTERS), rich_help_panel=SYSTEM),
    ] = "round-robin",
    rate: Annotated[
        float, typer.Option(help="Requests (conversations) per second; inf sends all at once.")
    ] = 10.0,
    burstiness: Annotated[
        float, typer.Option(help="Gamma shape of the gaps: 1 is Poisson, below 1 burstier.")
    ] = 1.0,
    duration: Annotated[
        float | None, typer.Option(help="Send for this many seconds.", metavar="SECONDS")
    ] = None,
    num_requests: Annotated[int | None, typer.Option(min=1, help="Send this many.")] = None,
    input_len: Annotated[
        str,
        typer.Option(help="Prompt tokens: N, uniform:LOW:HIGH, normal:MEAN:STD, exponential:MEAN."),
    ] = "1024",
    output_len: Annotated[str, typer.Option(help="Output tokens, as --input-len.")] = "128",
    num_prefixes: Annotated[int, typer.Option(min=0, help="Shared system prompts.")] = 0,
    prefix_len: Annotated[int, typer.Option(min=0, help="Tokens per system prompt.")] = 0,
    turns: Annotated[int, typer.Option(min=1, help="Turns per conversation.")] = 1,
    think_time: Annotated[
        float, typer.Option(min=0, help="Seconds between an answer and the next turn.")
    ] = 0.0,
    adapters: Annotated[
        str | None,
        typer.Option(
            help="LoRA adapters, comma-separated: each conversation names one at random and "
            "goes to an instance serving it (--set lora=NAME,... or a fleet file's lora); "
            "max_loras slots and lora_load_latency apply as live."
        ),
    ] = None,
    dataset: Annotated[
        Path | None, typer.Option(help="ShareGPT or chat JSONL dataset, sent at --rate.")
    ] = None,
    recording: Annotated[Path | None, typer.Option(help="A file from `llmsim record`.")] = None,
    replay_speed: Annotated[
        float, typer.Option(min=0.001, help="Recording: 2 sends twice as fast.")
    ] = 1.0,
    trace: Annotated[
        Path | None, typer.Option(help="JSON lines: at, prompt_tokens or prompt, output_tokens.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same run, bit for bit.")] = 0,
    slo: Annotated[
        str | None,
        typer.Option(
            help="Bounds a good request meets: ttft=500ms,tpot=50ms (also e2e, queue).",
            rich_help_panel=RESULTS,
        ),
    ] = None,
    attainment: Annotated[
        float,
        typer.Option(
            min=0,
            max=1,
            help="Share of requests within the SLO for --find to pass.",
            rich_help_panel=QUESTIONS,
        ),
    ] = 0.9,
    cost_per_hour: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="What one instance costs per hour: adds the cost per million output tokens "
            "(instances whose profile or fleet pool sets cost_per_hour cost that instead).",
            rich_help_panel=RESULTS,
        ),
    ] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="table or json.", rich_help_panel=RESULTS)
    ] = "table",
    output: Annotated[
        Path | None,
        typer.Option(
            help="Directory for requests.jsonl, timeseries.csv, summary.json and PNG plots (sweep: sweep.json, sweep.png).",
            rich_help_panel=RESULTS,
        ),
    ] = None,
    interval: Annotated[
        float,
        typer.Option(min=0.001, help="Seconds between time-series rows.", rich_help_panel=RESULTS),
    ] = 1.0,
    sweep: Annotated[
        str | None,
        typer.Option(
            help="rate=1:64:x2, replicas=1:8:1 or any setting: one run per point.",
            rich_help_panel=QUESTIONS,
        ),
    ] = None,
    find: Annotated[
        str | None,
        typer.Option(
            help="max-rate (for --replicas) or replicas (for --rate), under --slo.",
            rich_help_panel=QUESTIONS,
        ),
    ] = None,
) -> None:
    """Run a workload through simulated vLLM instances behind a router, in virtual time.

    Every instance is the step engine `llmsim serve` runs, set up from the same profile,
    TOML file and settings; nothing sleeps and no socket opens, so a minute of traffic
    takes seconds. Without --num-requests or --duration, 200 requests are sent.
    """
    if router not in ROUTERS:
        raise fail([f"--router {router!r}: expected one of {', '.join(ROUTERS)}"])
    if output_format not in ("table", "json"):
        raise fail([f"--format {output_format!r}: expected table or json"])
    if sum(x is not None for x in (dataset, recording, trace)) > 1:
        raise fail(["give at most one of --dataset, --recording and --trace"])
    if find is not None and find not in ("max-rate", "replicas"):
        raise fail([f"--find {find!r}: expected max-rate or replicas"])
    flags = _flags(profile, config, set_ or [])
    settings = load_or_exit(flags).settings
    try:
        slo_bounds = SLO.parse(slo) if slo else None
        if find is not None and slo_bounds is None:
            raise SLOError("--find needs --slo")
        count = num_requests if num_requests is not None or duration is not None else 200

        def workload(at_rate: float) -> Workload:
            if trace is not None:
                return TraceWorkload(trace)
            if recording is not None:
                return RecordingWorkload(recording, replay_speed, at_rate)
            if dataset is not None:
                return DatasetWorkload(dataset, at_rate, burstiness, count, duration)
            return Synthetic(
                at_rate,
                Lengths.parse(input_len, "--input-len"),
                Lengths.parse(output_len, "--output-len"),
                count,
                duration,
                burstiness,
                num_prefixes,
                prefix_len,
                turns,
                think_time,
                tuple(name.strip() for name in (adapters or "").split(",") if name.strip()),
            )

        setup = Setup(settings, replicas, router, seed, slo_bounds, output, interval)
        swept = (sweep or "").partition("=")[0].strip()
        if fleet is not None and (find == "replicas" or (sweep and swept != "rate")):
            raise SearchError("--fleet fixes the instances: only --sweep rate=... and max-rate")
        if (trace or recording) and (find == "max-rate" or swept == "rate"):
            raise SearchError("--trace and --recording fix the arrivals: no rate sweep or search")
        if fleet is not None:
            setup = replace(setup, fleet=_fleet_settings(fleet))
        setup = replace(setup, cost_per_hour=cost_per_hour)
        _check_prices(setup)
        if prefill_replicas:
            prefill = settings
            if prefill_profile is not None:
                prefill = load_or_exit({**flags, "profile": prefill_profile}).settings
            setup = replace(setup, prefill=(prefill,) * prefill_replicas)
        if output is not None and not plots.available():
            err.print(f"[yellow]note:[/yellow] {escape(plots.INSTALL_HINT)}", highlight=False)
        workload(rate).requests(seed)  # refuse bad arrivals before running anything
        console = Console()
        if sweep is not None:
            _sweep(console, Grid.parse(sweep), setup, workload, rate, flags, output_format)
        elif find is not None:
            _find(console, find, setup, workload, rate, attainment, output_format)
        else:
            total = count if trace is None and recording is None else None
            with _progress_bar(total) as tick:
                result = run_simulation(replace(setup, progress=tick), workload(rate))
            count = len(setup.instance_settings())
            _show(console, result, output_format, f"{count} x {router}, rate {rate:g}/s")
    except (WorkloadError, SLOError, SearchError) as exc:
        raise fail([str(exc)]) from None
    except OSError as exc:
        raise fail([f"cannot write to {exc.filename}: {exc.strerror}"]) from None


@contextlib.contextmanager
def _progress_bar(total: int | None) -> Iterator[Callable[[int], None] | None]:
    """A transient bar of finished requests on a terminal's stderr; nothing elsewhere."""
    if not err.is_terminal:
        yield None
        return
    with Progress(
        TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), console=err, transient=True
    ) as progress:
        task = progress.add_task("requests", total=total)
        yield lambda done: progress.update(task, completed=done)


def _fleet_settings(path: Path) -> tuple[Settings, ...]:
    """Each fleet instance's settings, once per data-parallel rank, on the step engine."""
    from llmsim.pool.fleet import FleetError, load_fleet

    try:
        plan = load_fleet(path)
    except FleetError as exc:
        raise fail(exc.lines) from None
    engines = []
    for instance in plan.instances:
        settings = instance.settings.model_copy(update={"latency_model": "step"})
        if settings.kv_cache_size < settings.max_model_len:
            raise fail(
                [
                    f"{path}: instance {instance.name!r}: the simulation runs the step model, "
                    f"which needs kv_cache_size ({settings.kv_cache_size}) of at least "
                    f"max_model_len ({settings.max_model_len})"
                ]
            )
        engines += [settings] * len(instance.ranks)
    return tuple(engines)


def _flags(profile: str | None, config: str | None, items: list[str]) -> dict[str, Any]:
    flags: dict[str, Any] = {"latency_model": "step", "profile": profile, "config": config}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise fail([f"--set {item!r}: expected KEY=VALUE"])
        flags[key.strip().replace("-", "_")] = value.strip()
    flags["latency_model"] = "step"  # the simulation runs the step engine
    return flags


def _show(console: Console, result: Result, output_format: str, title: str) -> None:
    if output_format == "json":
        console.print_json(json.dumps(result.as_json()))
    else:
        console.print(summary_table(result, title))


def _sweep(
    console: Console,
    grid: Grid,
    setup: Setup,
    workload: Any,
    rate: float,
    flags: dict[str, Any],
    output_format: str,
) -> None:
    points: list[tuple[float, Result]] = []
    for value in grid.values:
        point = replace(setup, output=None)
        at_rate = rate
        if grid.name == "rate":
            at_rate = value
        elif grid.name == "replicas":
            point = replace(point, replicas=max(1, round(value)))
        else:
            shown = int(value) if value == int(value) else value
            point = replace(point, settings=load_or_exit({**flags, grid.name: str(shown)}).settings)
        points.append((value, run_simulation(point, workload(at_rate))))
    rows = [{grid.name: value, **result.as_json()} for value, result in points]
    if setup.output is not None:
        setup.output.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"sweep": rows}, indent=2, sort_keys=True) + "\n"
        (setup.output / "sweep.json").write_text(text, encoding="utf-8")
        if plots.available():
            plots.write_sweep_plot(setup.output / "sweep.png", grid.name, points)
    if output_format == "json":
        console.print_json(json.dumps({"sweep": rows}))
    else:
        console.print(sweep_table(grid.name, points))


def _find(
    console: Console,
    find: str,
    setup: Setup,
    workload: Any,
    rate: float,
    attainment: float,
    output_format: str,
) -> None:
    quiet = replace(setup, output=None)

    def meets(result: Result) -> bool:
        return result.overall["requests"] > 0 and result.overall["good_share"] >= attainment

    if find == "max-rate":
        best, result = max_rate(lambda r: run_simulation(quiet, workload(r)), meets)
        answer: dict[str, Any] = {"max_rate": best}
        text = f"highest rate meeting the SLO on {setup.replicas} replica(s): {best:.3g} req/s"
    else:
        if math.isinf(rate):
            raise SearchError("--find replicas needs a finite --rate")
        count, result = fewest_replicas(
            lambda n: run_simulation(replace(quiet, replicas=n), workload(rate)), meets
        )
        answer = {"replicas": count}
        text = f"fewest replicas meeting the SLO at {rate:g} req/s: {count}"
    if output_format == "json":
        console.print_json(json.dumps({**answer, **(result.as_json() if result else {})}))
        return
    console.print(text)
    if result is not None:
        console.print(summary_table(result, "at that point"))


def _check_prices(setup: Setup) -> None:
    """Some instances priced by their settings and others not: the cost needs them all."""
    instances = (*setup.instance_settings(), *setup.prefill)
    priced = [each.cost_per_hour is not None for each in instances]
    if any(priced) and not all(priced) and setup.cost_per_hour is None:
        raise fail(
            [
                f"{priced.count(False)} of {len(priced)} instances have no cost_per_hour: "
                "pass --cost-per-hour for them"
            ]
        )
