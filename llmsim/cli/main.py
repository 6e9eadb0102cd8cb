"""The ``llmsim`` command: a flat mapping of options onto :class:`~llmsim.settings.model.Settings`.

Every ``serve`` option is typed as text here and validated by the settings model, so
a bad value gives the same one-line error whether it came from a flag, an
``LLMSIM_*`` variable or a TOML profile. On/off settings are flag pairs
(``--access-log/--no-access-log``) that stay ``None`` when not given, so the
environment and the profile still apply.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main
from pydantic import AliasChoices
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmsim.cli.ctl import ctl_app
from llmsim.cli.ctl_responses import responses_app
from llmsim.cli.options import CONFIG_FILE_OPTION, PROFILE_OPTION, err, fail, load_or_exit
from llmsim.cli.profiles import profiles_app
from llmsim.cli.record import record
from llmsim.cli.simulate import EXAMPLES, simulate
from llmsim.cli.versions import version_lines
from llmsim.cli.vllm_argv import MULTI_VALUE_OPTIONS, translate_serve_args
from llmsim.pool.launch import launch
from llmsim.settings.info import completer
from llmsim.settings.instances import Instance, data_parallel_instances
from llmsim.settings.model import DataParallelBackend, Settings, env_name
from llmsim.settings.sources import (
    display_value,
    render_default_profile,
)

app = typer.Typer(
    name="llmsim",
    help="A vLLM-compatible OpenAI API server that simulates inference: no GPU, no model.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Write and inspect TOML profiles.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(ctl_app, name="ctl")
ctl_app.add_typer(responses_app, name="responses")
app.command("record")(record)
app.command("simulate", epilog=EXAMPLES)(simulate)

SERVER, MODEL, LATENCY, SCHED = "Server", "Model and adapters", "Latency", "Scheduling"
FAULTS, METRICS = "Failure injection", "Metrics"
ANSWERS = "Chosen answers"
KV = "KV events, P/D and sleep mode"
TLS = "TLS"


def _help(field: str) -> str:
    info = Settings.model_fields[field]
    names = env_name(field)
    if isinstance(info.validation_alias, AliasChoices):
        names = " or ".join(str(choice) for choice in info.validation_alias.choices)
    default = info.get_default(call_default_factory=True)
    shown = "" if default in (None, []) else f" \\[default: {display_value(field, default)}]"
    return f"{info.description} [dim]\\[env: {names}]{shown}[/dim]"


@functools.cache
def _opt(field: str, *flags: str, panel: str, metavar: str | None = "TEXT") -> Any:
    """An option for ``field``; an on/off pair (``--x/--no-x``) is a flag without a value.

    Cached: the annotations are read twice per run (the vLLM splitter, then Typer)."""
    names = flags or ("--" + field.replace("_", "-"),)
    if any("/" in name for name in names):
        metavar = None
    return typer.Option(
        *names,
        help=_help(field),
        rich_help_panel=panel,
        metavar=metavar,
        show_default=False,
        autocompletion=completer(field),
    )


def _version_callback(value: bool) -> None:
    if value:
        typer.echo("\n".join(version_lines()))
        raise typer.Exit


@app.callback()
def main_callback(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version",
            "-V",
            callback=_version_callback,
            is_eager=True,
            help="Print the versions of llmsim, Python and the key dependencies.",
        ),
    ] = None,
) -> None:
    """A vLLM-compatible OpenAI API server that simulates inference: no GPU, no model."""


@app.command()
def serve(
    config: Annotated[
        str | None, _opt("config", "--config", "-c", panel=SERVER, metavar="FILE")
    ] = None,
    profile: Annotated[str | None, _opt("profile", panel=SERVER, metavar="NAME")] = None,
    host: Annotated[str | None, _opt("host", panel=SERVER, metavar="HOST")] = None,
    port: Annotated[str | None, _opt("port", panel=SERVER, metavar="INT")] = None,
    grpc_port: Annotated[str | None, _opt("grpc_port", panel=SERVER, metavar="INT")] = None,
    log_level: Annotated[str | None, _opt("log_level", panel=SERVER, metavar="LEVEL")] = None,
    log_format: Annotated[str | None, _opt("log_format", panel=SERVER, metavar="text|json")] = None,
    access_log: Annotated[
        bool | None, _opt("access_log", "--access-log/--no-access-log", panel=SERVER)
    ] = None,
    disable_access_log_for_endpoints: Annotated[
        list[str] | None,
        _opt("disable_access_log_for_endpoints", panel=SERVER, metavar="PATH,PATH"),
    ] = None,
    dashboard: Annotated[
        bool | None, _opt("dashboard", "--dashboard/--no-dashboard", panel=SERVER)
    ] = None,
    api_key: Annotated[str | None, _opt("api_key", panel=SERVER, metavar="KEY")] = None,
    allowed_origins: Annotated[
        list[str] | None, _opt("allowed_origins", panel=SERVER, metavar="JSON|A,B")
    ] = None,
    allowed_methods: Annotated[
        list[str] | None, _opt("allowed_methods", panel=SERVER, metavar="JSON|A,B")
    ] = None,
    allowed_headers: Annotated[
        list[str] | None, _opt("allowed_headers", panel=SERVER, metavar="JSON|A,B")
    ] = None,
    allow_credentials: Annotated[
        bool | None,
        _opt("allow_credentials", "--allow-credentials/--no-allow-credentials", panel=SERVER),
    ] = None,
    root_path: Annotated[str | None, _opt("root_path", panel=SERVER, metavar="PATH")] = None,
    disable_fastapi_docs: Annotated[
        bool | None,
        _opt(
            "disable_fastapi_docs",
            "--disable-fastapi-docs/--no-disable-fastapi-docs",
            panel=SERVER,
        ),
    ] = None,
    max_request_body_size: Annotated[
        str | None, _opt("max_request_body_size", panel=SERVER, metavar="SIZE")
    ] = None,
    responses_store_max_entries: Annotated[
        str | None, _opt("responses_store_max_entries", panel=SERVER, metavar="INT")
    ] = None,
    responses_store_max_size: Annotated[
        str | None, _opt("responses_store_max_size", panel=SERVER, metavar="SIZE")
    ] = None,
    startup_duration: Annotated[
        str | None, _opt("startup_duration", panel=SERVER, metavar="DURATION")
    ] = None,
    shutdown_timeout: Annotated[
        str | None, _opt("shutdown_timeout", panel=SERVER, metavar="DURATION")
    ] = None,
    data_parallel_size: Annotated[
        str | None,
        _opt("data_parallel_size", "--data-parallel-size", "-dp", panel=SERVER, metavar="INT"),
    ] = None,
    data_parallel_rank: Annotated[
        str | None,
        _opt("data_parallel_rank", "--data-parallel-rank", "-dpn", panel=SERVER, metavar="INT"),
    ] = None,
    data_parallel_size_local: Annotated[
        str | None,
        _opt(
            "data_parallel_size_local",
            "--data-parallel-size-local",
            "-dpl",
            panel=SERVER,
            metavar="INT",
        ),
    ] = None,
    data_parallel_start_rank: Annotated[
        str | None,
        _opt(
            "data_parallel_start_rank",
            "--data-parallel-start-rank",
            "-dpr",
            panel=SERVER,
            metavar="INT",
        ),
    ] = None,
    data_parallel_hybrid_lb: Annotated[
        bool | None,
        _opt(
            "data_parallel_hybrid_lb",
            "--data-parallel-hybrid-lb/--no-data-parallel-hybrid-lb",
            "-dph",
            panel=SERVER,
        ),
    ] = None,
    data_parallel_external_lb: Annotated[
        bool | None,
        _opt(
            "data_parallel_external_lb",
            "--data-parallel-external-lb/--no-data-parallel-external-lb",
            "-dpe",
            panel=SERVER,
        ),
    ] = None,
    api_server_count: Annotated[
        str | None,
        _opt("api_server_count", "--api-server-count", "-asc", panel=SERVER, metavar="INT"),
    ] = None,
    dp_ports: Annotated[bool | None, _opt("dp_ports", "--dp-ports/--no-dp-ports", panel=SERVER)] = (
        None
    ),
    data_parallel_backend: Annotated[
        str | None, _opt("data_parallel_backend", panel=SERVER, metavar="mp|inprocess|workers")
    ] = None,
    workers: Annotated[str | None, _opt("workers", panel=SERVER, metavar="INT")] = None,
    ssl_keyfile: Annotated[str | None, _opt("ssl_keyfile", panel=TLS, metavar="FILE")] = None,
    ssl_certfile: Annotated[str | None, _opt("ssl_certfile", panel=TLS, metavar="FILE")] = None,
    ssl_ca_certs: Annotated[str | None, _opt("ssl_ca_certs", panel=TLS, metavar="FILE")] = None,
    ssl_cert_reqs: Annotated[str | None, _opt("ssl_cert_reqs", panel=TLS, metavar="0|1|2")] = None,
    enable_ssl_refresh: Annotated[
        bool | None,
        _opt("enable_ssl_refresh", "--enable-ssl-refresh/--no-enable-ssl-refresh", panel=TLS),
    ] = None,
    self_signed_certs: Annotated[
        bool | None,
        _opt("self_signed_certs", "--self-signed-certs/--no-self-signed-certs", panel=TLS),
    ] = None,
    vllm_flags_without_effect: Annotated[
        list[str] | None, _opt("vllm_flags_without_effect", panel=SERVER, metavar="FLAG")
    ] = None,
    model: Annotated[str | None, _opt("model", panel=MODEL, metavar="NAME")] = None,
    served_model_name: Annotated[
        list[str] | None, _opt("served_model_name", panel=MODEL, metavar="NAME...")
    ] = None,
    lora: Annotated[list[str] | None, _opt("lora", panel=MODEL, metavar="A,B")] = None,
    lora_modules: Annotated[
        list[str] | None, _opt("lora_modules", panel=MODEL, metavar="NAME=PATH...")
    ] = None,
    max_model_len: Annotated[str | None, _opt("max_model_len", panel=MODEL, metavar="INT")] = None,
    tokenizer: Annotated[str | None, _opt("tokenizer", panel=MODEL, metavar="PATH|HUB_ID")] = None,
    chat_template: Annotated[str | None, _opt("chat_template", panel=MODEL, metavar="FILE")] = None,
    max_logprobs: Annotated[str | None, _opt("max_logprobs", panel=MODEL, metavar="INT")] = None,
    max_request_work: Annotated[
        str | None, _opt("max_request_work", panel=MODEL, metavar="INT")
    ] = None,
    response_role: Annotated[str | None, _opt("response_role", panel=MODEL, metavar="ROLE")] = None,
    return_tokens_as_token_ids: Annotated[
        bool | None,
        _opt(
            "return_tokens_as_token_ids",
            "--return-tokens-as-token-ids/--no-return-tokens-as-token-ids",
            panel=MODEL,
        ),
    ] = None,
    reasoning_parser: Annotated[
        str | None, _opt("reasoning_parser", panel=MODEL, metavar="NAME")
    ] = None,
    enable_auto_tool_choice: Annotated[
        bool | None,
        _opt(
            "enable_auto_tool_choice",
            "--enable-auto-tool-choice/--no-enable-auto-tool-choice",
            panel=MODEL,
        ),
    ] = None,
    tool_call_parser: Annotated[
        str | None, _opt("tool_call_parser", panel=MODEL, metavar="NAME")
    ] = None,
    runner: Annotated[
        str | None, _opt("runner", panel=MODEL, metavar="auto|generate|pooling|draft")
    ] = None,
    embedding_dimension: Annotated[
        str | None, _opt("embedding_dimension", panel=MODEL, metavar="INT")
    ] = None,
    mode: Annotated[str | None, _opt("mode", panel=MODEL, metavar="echo|random")] = None,
    seed: Annotated[str | None, _opt("seed", panel=MODEL, metavar="INT")] = None,
    tool_call_probability: Annotated[
        str | None, _opt("tool_call_probability", panel=MODEL, metavar="FLOAT")
    ] = None,
    responses: Annotated[
        str | None, _opt("responses", panel=ANSWERS, metavar="FILE|builtin:tasks")
    ] = None,
    dataset: Annotated[str | None, _opt("dataset", panel=ANSWERS, metavar="FILE")] = None,
    replay: Annotated[str | None, _opt("replay", panel=ANSWERS, metavar="FILE")] = None,
    replay_speed: Annotated[
        str | None, _opt("replay_speed", panel=ANSWERS, metavar="FLOAT")
    ] = None,
    replay_strict: Annotated[
        bool | None, _opt("replay_strict", "--replay-strict/--no-replay-strict", panel=ANSWERS)
    ] = None,
    upstream: Annotated[str | None, _opt("upstream", panel=ANSWERS, metavar="URL")] = None,
    upstream_timeout: Annotated[
        str | None, _opt("upstream_timeout", panel=ANSWERS, metavar="DURATION")
    ] = None,
    latency_model: Annotated[
        str | None, _opt("latency_model", panel=LATENCY, metavar="constant|per-token|step")
    ] = None,
    time_to_first_token: Annotated[
        str | None, _opt("time_to_first_token", panel=LATENCY, metavar="DURATION")
    ] = None,
    time_to_first_token_std_dev: Annotated[
        str | None, _opt("time_to_first_token_std_dev", panel=LATENCY, metavar="DURATION")
    ] = None,
    frontend_latency: Annotated[
        str | None, _opt("frontend_latency", panel=LATENCY, metavar="DURATION")
    ] = None,
    frontend_serial_time: Annotated[
        str | None, _opt("frontend_serial_time", panel=LATENCY, metavar="DURATION")
    ] = None,
    prefill_overhead: Annotated[
        str | None,
        typer.Option("--prefill-overhead", hidden=True, help="Old name of --frontend-latency."),
    ] = None,
    prefill_time_per_token: Annotated[
        str | None, _opt("prefill_time_per_token", panel=LATENCY, metavar="DURATION")
    ] = None,
    inter_token_latency: Annotated[
        str | None, _opt("inter_token_latency", panel=LATENCY, metavar="DURATION")
    ] = None,
    inter_token_latency_std_dev: Annotated[
        str | None, _opt("inter_token_latency_std_dev", panel=LATENCY, metavar="DURATION")
    ] = None,
    time_factor_under_load: Annotated[
        str | None, _opt("time_factor_under_load", panel=LATENCY, metavar="FLOAT")
    ] = None,
    lora_load_latency: Annotated[
        str | None, _opt("lora_load_latency", panel=LATENCY, metavar="DURATION")
    ] = None,
    max_running_requests: Annotated[
        str | None,
        _opt(
            "max_running_requests",
            "--max-running-requests",
            "--max-num-seqs",
            panel=SCHED,
            metavar="INT",
        ),
    ] = None,
    max_waiting_queue_length: Annotated[
        str | None, _opt("max_waiting_queue_length", panel=SCHED, metavar="INT")
    ] = None,
    max_loras: Annotated[str | None, _opt("max_loras", panel=SCHED, metavar="INT")] = None,
    max_cpu_loras: Annotated[str | None, _opt("max_cpu_loras", panel=SCHED, metavar="INT")] = None,
    kv_cache_size: Annotated[
        str | None, _opt("kv_cache_size", panel=SCHED, metavar="TOKENS")
    ] = None,
    # -- step engine ------------------------------------------------------------
    block_size: Annotated[str | None, _opt("block_size", panel=SCHED, metavar="INT")] = None,
    max_num_batched_tokens: Annotated[
        str | None, _opt("max_num_batched_tokens", panel=SCHED, metavar="INT")
    ] = None,
    decode_time_per_sequence: Annotated[
        str | None, _opt("decode_time_per_sequence", panel=LATENCY, metavar="DURATION")
    ] = None,
    context_time_per_token: Annotated[
        str | None, _opt("context_time_per_token", panel=LATENCY, metavar="DURATION")
    ] = None,
    enable_prefix_caching: Annotated[
        bool | None,
        _opt(
            "enable_prefix_caching",
            "--enable-prefix-caching/--no-enable-prefix-caching",
            panel=SCHED,
        ),
    ] = None,
    kv_blocks: Annotated[
        bool | None, _opt("kv_blocks", "--kv-blocks/--no-kv-blocks", panel=SCHED)
    ] = None,
    enable_prompt_tokens_details: Annotated[
        bool | None,
        _opt(
            "enable_prompt_tokens_details",
            "--enable-prompt-tokens-details/--no-enable-prompt-tokens-details",
            panel=METRICS,
        ),
    ] = None,
    failure_injection_rate: Annotated[
        str | None, _opt("failure_injection_rate", panel=FAULTS, metavar="PERCENT")
    ] = None,
    failure_types: Annotated[
        list[str] | None, _opt("failure_types", panel=FAULTS, metavar="A,B")
    ] = None,
    stream_cut_rate: Annotated[
        str | None, _opt("stream_cut_rate", panel=FAULTS, metavar="PERCENT")
    ] = None,
    fake_metrics: Annotated[
        str | None, _opt("fake_metrics", panel=METRICS, metavar="FILE|JSON")
    ] = None,
    fake_metrics_refresh_interval: Annotated[
        str | None, _opt("fake_metrics_refresh_interval", panel=METRICS, metavar="DURATION")
    ] = None,
    kv_cache_metrics: Annotated[
        bool | None,
        _opt("kv_cache_metrics", "--kv-cache-metrics/--no-kv-cache-metrics", panel=METRICS),
    ] = None,
    kv_cache_metrics_sample: Annotated[
        str | None, _opt("kv_cache_metrics_sample", panel=METRICS, metavar="FRACTION")
    ] = None,
    kv_events_config: Annotated[
        str | None, _opt("kv_events_config", panel=KV, metavar="JSON")
    ] = None,
    prefix_caching_hash_algo: Annotated[
        str | None, _opt("prefix_caching_hash_algo", panel=KV, metavar="ALGO")
    ] = None,
    enable_sleep_mode: Annotated[
        bool | None,
        _opt("enable_sleep_mode", "--enable-sleep-mode/--no-enable-sleep-mode", panel=KV),
    ] = None,
    kv_cache_transfer_latency: Annotated[
        str | None, _opt("kv_cache_transfer_latency", panel=KV, metavar="DURATION")
    ] = None,
    kv_cache_transfer_latency_std_dev: Annotated[
        str | None, _opt("kv_cache_transfer_latency_std_dev", panel=KV, metavar="DURATION")
    ] = None,
    kv_cache_transfer_time_per_token: Annotated[
        str | None, _opt("kv_cache_transfer_time_per_token", panel=KV, metavar="DURATION")
    ] = None,
    kv_cache_transfer_time_per_token_std_dev: Annotated[
        str | None, _opt("kv_cache_transfer_time_per_token_std_dev", panel=KV, metavar="DURATION")
    ] = None,
) -> None:
    """Start the simulated vLLM server (Ctrl-C or SIGTERM to stop).

    Also takes `vllm serve`'s command line as it is (llmsim serve MODEL -tp 8 ...);
    vLLM's flags without a meaning here are accepted and listed at start-up.
    Durations accept 250ms, 1.5s, 750us or a bare number of milliseconds.
    Precedence: flags > LLMSIM_* environment > --profile NAME > --config TOML file > defaults.
    """
    flags = {key: value for key, value in locals().items() if value is not None}
    settings = load_or_exit(flags).settings
    _launch_or_exit(
        data_parallel_instances(settings),
        settings.data_parallel_backend,
        settings.log_level,
        settings.workers,
    )


@app.command()
def fleet(
    path: Annotated[Path, typer.Argument(help="The fleet file (TOML).", metavar="FILE")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate the file, print the plan and exit.")
    ] = False,
    base_port: Annotated[
        int | None,
        typer.Option(
            "--base-port",
            help="First port for instances without one (overrides base_port in the file).",
            min=0,
            max=65535,
        ),
    ] = None,
) -> None:
    """Start a fleet of simulated vLLM instances described in a TOML file.

    Every instance gets its own port, scheduler, adapters and metrics (and, by default,
    its own process; data_parallel_backend = "workers" spreads them over a few). One
    Ctrl-C or SIGTERM stops them all; an instance that exits is reported and the others
    are stopped (exit status 1): nothing is restarted.
    Problems in the file exit with status 2 before anything starts.
    """
    from llmsim.pool.fleet import FleetError, load_fleet

    try:
        plan = load_fleet(path, base_port=base_port)
    except FleetError as exc:
        raise fail(exc.lines) from None
    if dry_run:
        from llmsim.pool.fleet import render_plan

        render_plan(Console(), plan)
        return
    _launch_or_exit(plan.instances, plan.backend, plan.log_level, plan.workers)


def _check_tokenizer(settings: Settings) -> None:
    """A tokenizer that cannot be loaded is a one-line start-up error (exit 2)."""
    if settings.tokenizer is None and settings.chat_template is None:
        return
    from llmsim.engine.tokenizer import TokenizerError, load_tokenizer

    try:
        load_tokenizer(settings.tokenizer, settings.chat_template)
    except TokenizerError as exc:
        raise fail([str(exc)]) from None


def _launch_or_exit(
    instances: Sequence[Instance],
    backend: DataParallelBackend,
    log_level: str,
    workers: int | None = None,
) -> None:
    from llmsim.cli.tls import tls_files
    from llmsim.observability.logs import configure_logging
    from llmsim.server.runner import ServerStartError

    for instance in instances:
        _check_tokenizer(instance.settings)
    _check_grpc(instances)
    with tls_files(instances) as ready:
        console = Console()
        configure_logging(ready[0].settings.model_copy(update={"log_level": log_level}), console)
        try:
            code = launch(ready, backend, console, workers)
        except ServerStartError as exc:
            err.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:  # a second Ctrl-C during shutdown
            code = 0
    if code:
        raise typer.Exit(code)


def _check_grpc(instances: Sequence[Instance]) -> None:
    """``--grpc-port`` without the grpc extra: one line naming it, exit status 2."""
    if all(instance.settings.grpc_port is None for instance in instances):
        return
    from llmsim.api.grpc.availability import missing_grpc

    problem = missing_grpc()
    if problem is not None:
        err.print(f"[bold red]error:[/bold red] {escape(problem)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)


@config_app.command("init")
def config_init(
    path: Annotated[
        Path | None,
        typer.Argument(help="Where to write the profile (stdout if omitted or '-')."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Overwrite an existing file.")
    ] = False,
) -> None:
    """Write a complete, commented TOML profile of the defaults."""
    text = render_default_profile()
    if path is None or str(path) == "-":
        sys.stdout.write(text)
        return
    if path.exists() and not force:
        err.print(
            f"[bold red]error:[/bold red] {path} exists (use --force to overwrite)", highlight=False
        )
        raise typer.Exit(1)
    path.write_text(text, encoding="utf-8")
    err.print(f"wrote {path}", highlight=False)


@config_app.command(
    "show", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def config_show(
    ctx: typer.Context,
    config: Annotated[str | None, CONFIG_FILE_OPTION] = None,
    profile: Annotated[str | None, PROFILE_OPTION] = None,
) -> None:
    """Print the effective settings and where each one came from.

    Also takes everything `llmsim serve` takes (its options and a `vllm serve` command
    line) and shows the settings that `serve` would run with.
    """
    flags = _serve_flags(list(ctx.args))
    loaded = load_or_exit({**flags, "config": config, "profile": profile})
    table = Table(title="llmsim settings", title_justify="left")
    table.add_column("setting", style="cyan")
    table.add_column("value")
    table.add_column("source", style="dim")
    for name in Settings.model_fields:
        value = display_value(name, getattr(loaded.settings, name))
        table.add_row(name, value, loaded.describe_source(name))
    Console().print(table)


app.add_typer(profiles_app, name="profiles")


def _click_error() -> Any:
    """The usage-error base class of the click that Typer runs on: recent Typer releases
    ship their own copy (``typer._click``) and no longer install click itself."""
    try:
        from typer._click.exceptions import ClickException
    except ImportError:
        from click.exceptions import ClickException  # type: ignore[assignment]
    return ClickException


CLICK_ERROR = _click_error()


def _serve_flags(args: list[str]) -> dict[str, Any]:
    """The settings flags that ``llmsim serve ARGS`` would be given."""
    if not args:
        return {}
    command = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    try:
        context = command.make_context("serve", expand_multi_value_options(args))
    except CLICK_ERROR as exc:
        exc.show()
        raise typer.Exit(exc.exit_code) from None
    return {key: value for key, value in context.params.items() if value not in (None, ())}


def expand_multi_value_options(argv: list[str]) -> list[str]:
    """Rewrite ``--served-model-name a b`` as ``--served-model-name a --served-model-name b``."""
    expanded: list[str] = []
    current: str | None = None
    for arg in argv:
        if arg.startswith("-"):
            current = arg if arg in MULTI_VALUE_OPTIONS else None
            expanded.append(arg)
            continue
        if (
            current is not None
            and expanded
            and expanded[-1] != current
            and not expanded[-1].startswith("-")
        ):
            expanded.append(current)
        expanded.append(arg)
    return expanded


def main() -> None:
    args = translate_serve_args(sys.argv[1:], serve)
    app(args=expand_multi_value_options(args), prog_name="llmsim")
