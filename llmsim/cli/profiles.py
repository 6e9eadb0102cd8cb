"""``llmsim profiles``: list and inspect the named profiles ``--profile`` can pick."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from llmsim.cli.options import CONFIG_FILE_OPTION, fail
from llmsim.settings.model import ConfigError
from llmsim.settings.profiles import (
    BUILTIN,
    NamedProfile,
    available_profiles,
    builtin_calibration,
    find_profile,
)
from llmsim.settings.renamed import migrate
from llmsim.settings.sources import display_value, read_config_file, validate_exactly

profiles_app = typer.Typer(
    help="List and show named profiles (built in, or [profiles.NAME] tables of a TOML file).",
    no_args_is_help=True,
)

NO_WRAP = frozenset({"name", "TTFT", "ITL"})


def _file_profiles(config: str | None) -> dict[str, NamedProfile]:
    if not config:
        return {}
    try:
        return read_config_file(Path(config)).profiles
    except ConfigError as exc:
        raise fail(exc.lines) from None


def _shown(name: str, raw: Any) -> str:
    """A profile value as the user would write it, validated like any other setting
    (but without the environment, which must not change what a profile shows)."""
    try:
        value = getattr(validate_exactly({name: raw}), name)
    except ValueError:
        return str(raw)
    return display_value(name, value)


def _seconds(name: str, raw: Any) -> float:
    try:
        return float(getattr(validate_exactly({name: raw}), name))
    except ValueError:
        return 0.0


def _first_token(values: Mapping[str, Any]) -> str:
    if values.get("latency_model") == "per-token":
        front = values.get("frontend_latency", values.get("prefill_overhead", 0))
        fixed = _seconds("frontend_latency", front)
        fixed += _seconds("inter_token_latency", values.get("inter_token_latency", 0))
        overhead = display_value("frontend_latency", fixed)
        per_token = _shown("prefill_time_per_token", values.get("prefill_time_per_token", 0))
        return f"{overhead} + {per_token}/tok"
    return _shown("time_to_first_token", values.get("time_to_first_token", 0))


@profiles_app.command("list")
def list_profiles(config: Annotated[str | None, CONFIG_FILE_OPTION] = None) -> None:
    """List every profile --profile can pick: built-in ones and those of --config FILE."""
    table = Table(title="llmsim profiles", title_justify="left")
    for column in ("name", "TTFT", "ITL", "description", "source"):
        table.add_column(
            column, style="cyan" if column == "name" else None, no_wrap=column in NO_WRAP
        )
    for name, profile in sorted(available_profiles(_file_profiles(config)).items()):
        values = profile.values
        table.add_row(
            name,
            _first_token(values),
            _shown("inter_token_latency", values.get("inter_token_latency", 0)),
            profile.description,
            profile.origin,
        )
    Console().print(table)


@profiles_app.command("show")
def show_profile(
    name: Annotated[str, typer.Argument(help="Profile name, as given to --profile.")],
    config: Annotated[str | None, CONFIG_FILE_OPTION] = None,
) -> None:
    """Show the settings a profile sets; everything else keeps its default."""
    try:
        profile = find_profile(name, _file_profiles(config))
    except ConfigError as exc:
        raise fail(exc.lines) from None
    title = f"profile {profile.name} ({profile.origin})"
    table = Table(title=title, caption=profile.description or None, title_justify="left")
    table.add_column("setting", style="cyan")
    table.add_column("value")
    for key, raw in profile.values.items():
        table.add_row(key, _shown(key, raw))
    console = Console()
    console.print(table)
    values, _ = migrate(profile.values, profile.name)
    _print_predictions(console, values)
    if profile.origin == BUILTIN:
        _print_calibration(console, profile.name)


def _print_calibration(console: Console, name: str) -> None:
    """The published runs a built-in profile was fitted on, and what is missing."""
    calibration = builtin_calibration(name)
    if calibration is None:
        return
    if calibration.fitted:
        console.print("[bold]step model fitted on[/bold]")
    for line in calibration.fitted:
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    if calibration.missing:
        console.print(f"Under load: {calibration.missing}.", highlight=False, soft_wrap=True)


def _print_predictions(console: Console, values: Mapping[str, Any]) -> None:
    """What the profile predicts under ``--latency-model step`` (computed in virtual time)."""
    from llmsim.engine.step.predict import CONTEXT, predict

    try:
        settings = validate_exactly({**values, "latency_model": "step"})
    except ValueError as exc:
        console.print(f"No step-model predictions: {exc}", highlight=False)
        return
    prediction = predict(settings)
    table = Table(
        title="predicted with --latency-model step",
        caption=f"ITL with each sequence holding {CONTEXT} tokens; TTFT on an idle server",
        title_justify="left",
    )
    table.add_column("figure", style="cyan")
    table.add_column("value")
    for batch, itl in prediction.itl.items():
        table.add_row(f"ITL at batch {batch}", f"{itl * 1000:,.1f} ms")
    for prompt, ttft in prediction.ttft.items():
        table.add_row(f"TTFT, {prompt:,}-token prompt", f"{ttft * 1000:,.1f} ms")
    table.add_row(
        "peak decode tokens/s",
        f"{prediction.peak_decode_tokens_per_second:,.0f} (batch {prediction.peak_batch})",
    )
    console.print(table)
