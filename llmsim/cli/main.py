"""The ``llmsim`` command: its sub-commands and the entry point.

``serve``'s options (one per settings field) are declared in :mod:`llmsim.cli.serve`; starting
instances, for ``serve`` and ``fleet`` alike, is :mod:`llmsim.cli.launching`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main
from rich.console import Console
from rich.table import Table

from llmsim.cli.ctl import ctl_app
from llmsim.cli.ctl_responses import responses_app
from llmsim.cli.launching import launch_or_exit
from llmsim.cli.options import CONFIG_FILE_OPTION, PROFILE_OPTION, err, fail, load_or_exit
from llmsim.cli.profiles import profiles_app
from llmsim.cli.record import record
from llmsim.cli.serve import serve
from llmsim.cli.simulate import EXAMPLES, simulate
from llmsim.cli.versions import version_lines
from llmsim.cli.vllm_argv import MULTI_VALUE_OPTIONS, translate_serve_args
from llmsim.settings.model import Settings
from llmsim.settings.sources import (
    display_value,
    render_default_profile,
)

__all__ = ["app", "expand_multi_value_options", "main", "serve"]

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


app.command()(serve)


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
    launch_or_exit(plan.instances, plan.backend, plan.log_level, plan.workers)


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
