"""The options of ``llmsim serve``: each reads its help, environment name and default from
the settings field it sets, and goes into one of the help panels."""

from __future__ import annotations

import functools
from typing import Any

import typer
from pydantic import AliasChoices

from llmsim.settings.info import completer
from llmsim.settings.model import Settings, env_name
from llmsim.settings.sources import display_value

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
def opt(field: str, *flags: str, panel: str, metavar: str | None = "TEXT") -> Any:
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


def switch(field: str, panel: str) -> Any:
    """An on/off flag pair for ``field``: ``--x/--no-x``."""
    flag = "--" + field.replace("_", "-")
    return opt(field, f"{flag}/--no-{flag[2:]}", panel=panel)
