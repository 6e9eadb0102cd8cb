"""Pieces shared by the ``llmsim`` sub-commands: the error console, common options, and
loading settings with errors printed the same way everywhere."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from llmsim.settings.model import ConfigError
from llmsim.settings.sources import LoadedSettings, load_settings

err = Console(stderr=True)

CONFIG_FILE_OPTION = typer.Option(
    "--config", "-c", help="TOML file to read settings and profiles from.", metavar="FILE"
)
PROFILE_OPTION = typer.Option(
    "--profile", "-p", help="Named profile (from the file or built in).", metavar="NAME"
)


def fail(lines: list[str], code: int = 2) -> typer.Exit:
    """Print each line as an error; the caller raises the returned exit."""
    for line in lines:
        err.print(f"[bold red]error:[/bold red] {escape(line)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def load_or_exit(flags: dict[str, Any]) -> LoadedSettings:
    try:
        loaded = load_settings(flags)
    except ConfigError as exc:
        raise fail(exc.lines) from None
    for notice in loaded.notices:
        err.print(f"[yellow]note:[/yellow] {escape(notice)}", highlight=False, soft_wrap=True)
    return loaded
