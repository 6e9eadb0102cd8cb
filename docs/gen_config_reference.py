#!/usr/bin/env python3
"""Regenerate the settings reference and the table of vLLM's flags in docs/configuration.md.

The reference (the summary table and one section per setting, grouped like
``llmsim serve --help``) is rendered from ``Settings.model_fields`` and the ``serve``
command's options, between the BEGIN/END markers of docs/configuration.md; the table of every ``vllm serve``
flag and what it does here comes from ``llmsim.settings.vllm_flags``. Everything
outside the markers is hand-written and left alone. ``tests/test_docs.py`` fails when the
committed region differs from what this script renders.

Usage::

    python docs/gen_config_reference.py          # rewrite the region
    python docs/gen_config_reference.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's llmsim, whatever else is installed

import typer.main  # noqa: E402
from pydantic import AliasChoices  # noqa: E402

from llmsim.cli.main import app  # noqa: E402
from llmsim.settings import info as settings_info  # noqa: E402
from llmsim.settings.lora_modules import LoraModule  # noqa: E402
from llmsim.settings.model import LAYER_FIELDS, Settings, env_name  # noqa: E402
from llmsim.settings.sources import display_value, validate_exactly  # noqa: E402
from llmsim.settings.units import format_duration, format_size  # noqa: E402
from llmsim.settings.vllm_args import NO_EFFECT, VllmFlag, vllm_flags  # noqa: E402
from llmsim.settings.vllm_flags import VLLM_VERSION  # noqa: E402
from llmsim.settings.vllm_mapping import CONVERSION_NOTES  # noqa: E402

CONFIGURATION = ROOT / "docs" / "configuration.md"
COMMAND = "python docs/gen_config_reference.py"
BEGIN = f"<!-- BEGIN GENERATED REFERENCE: do not edit by hand, run `{COMMAND}` -->"
END = "<!-- END GENERATED REFERENCE -->"
VLLM_BEGIN = f"<!-- BEGIN GENERATED VLLM FLAGS: do not edit by hand, run `{COMMAND}` -->"
VLLM_END = "<!-- END GENERATED VLLM FLAGS -->"
OTHER_GROUP = "Other settings"


@dataclass(frozen=True)
class ServeOption:
    """How a setting appears on ``llmsim serve``: its flags and its ``--help`` panel."""

    flags: tuple[str, ...]
    panel: str


def serve_options() -> dict[str, ServeOption]:
    """The ``serve`` options by settings field (the Python parameter names are the fields)."""
    command = typer.main.get_command(app)
    serve = command.commands["serve"]  # type: ignore[attr-defined]
    options: dict[str, ServeOption] = {}
    for param in serve.params:
        flags = tuple(opt for opt in [*param.opts, *param.secondary_opts] if opt.startswith("--"))
        if param.name in Settings.model_fields and flags:
            panel = getattr(param, "rich_help_panel", None) or OTHER_GROUP
            options[param.name] = ServeOption(flags, panel)
    return options


# -- one cell each ------------------------------------------------------------------


def _code(text: str) -> str:
    return f"`{text}`"


def _cell(text: str) -> str:
    """Text that is safe inside a Markdown table cell and outside code spans."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*")


def flags_text(field: str, options: dict[str, ServeOption]) -> str:
    option = options.get(field)
    return ", ".join(_code(flag) for flag in option.flags) if option else "none"


def environment_text(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return " or ".join(_code(str(choice).upper()) for choice in alias.choices)
    return _code(env_name(field))


def toml_text(field: str) -> str:
    return (
        f"none ({_code(field)} is not allowed in a file)" if field in LAYER_FIELDS else _code(field)
    )


def default_text(field: str, defaults: Settings) -> str:
    """The declared default; for an unset one, also the value derived from other settings."""
    declared = Settings.model_fields[field].get_default(call_default_factory=True)
    if declared is not None and declared != []:
        return _code(display_value(field, declared))
    effective = display_value(field, getattr(defaults, field))
    return "none" if effective == "-" else f"none ({_code(effective)} with the defaults)"


def _number(value: float) -> str:
    """``1.0`` -> ``1``, ``1000000`` -> ``1000000`` (never ``1e+06``), ``0.5`` -> ``0.5``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _range(field: str, unit: str) -> str:
    """``from 1 to 100``, ``≥ 1``, ... from the field's bounds, in the setting's unit."""
    limits = settings_info.bounds(field)

    def show(value: float | None) -> str:
        if value is None:
            return ""
        return format_size(int(value)) if unit == "size" else _number(value)

    lower, upper = show(limits.lower), show(limits.upper)
    if lower and upper and limits.lower_inclusive and limits.upper_inclusive:
        return f" from {lower} to {upper}"
    parts = []
    if lower:
        parts.append(("≥ " if limits.lower_inclusive else "> ") + lower)
    if upper:
        parts.append(("≤ " if limits.upper_inclusive else "< ") + upper)
    return (" " + " and ".join(parts)) if parts else ""


def _adapter_forms() -> str:
    required = [name for name, info in LoraModule.model_fields.items() if info.is_required()]
    optional = [name for name, info in LoraModule.model_fields.items() if not info.is_required()]
    keys = ", ".join(_code(key) for key in required)
    extra = ", ".join(_code(key) for key in optional)
    return f"`name=path`, or a JSON object with {keys}" + (
        f" and optionally {extra}" if extra else ""
    )


def accepted_text(field: str) -> str:
    """The value type in words, with its choices, bounds and syntax links."""
    kind = settings_info.kind(field)
    several = settings_info.is_list(field)
    if kind == "choice":
        listed = ", ".join(_code(choice) for choice in settings_info.choices(field))
        return f"one or more of {listed} ([list forms](#lists))" if several else listed
    if kind == "duration":
        bounds = _range(field, kind)
        if bounds == " > 0":
            return "a [duration](#durations), greater than 0"
        upper = settings_info.bounds(field).upper
        most = "" if upper is None else f", at most {format_duration(upper)}"
        return "a [duration](#durations), not negative" + most
    if kind == "size":
        return "a [size](#sizes)" + _range(field, kind)
    if kind in ("integer", "number"):
        return f"{'an' if kind == 'integer' else 'a'} {kind}{_range(field, kind)}"
    if kind == "text" and several:
        return "one or more names ([list forms](#lists))"
    if kind == "adapter":
        return f"one or more adapters: {_adapter_forms()} ([list forms](#lists))"
    if kind == "text":
        limits = settings_info.bounds(field)
        return "text, not empty" if limits.min_length else "text"
    if kind == "secret":
        return "text, never logged or shown"
    if kind == "path":
        return "a path"
    return kind


# -- the page region ----------------------------------------------------------------


def _groups(options: dict[str, ServeOption]) -> dict[str, list[str]]:
    """Settings grouped by ``--help`` panel, in settings order (first field orders a group)."""
    groups: dict[str, list[str]] = {}
    for field in Settings.model_fields:
        panel = options[field].panel if field in options else OTHER_GROUP
        groups.setdefault(panel, []).append(field)
    return groups


def _summary(options: dict[str, ServeOption], defaults: Settings) -> list[str]:
    lines = ["| setting | flag | default | description |", "|---|---|---|---|"]
    for field, info in Settings.model_fields.items():
        lines.append(
            f"| [`{field}`](#{field}) | {flags_text(field, options)} | "
            f"{default_text(field, defaults)} | {_cell(info.description or '')} |"
        )
    return lines


def _section(field: str, options: dict[str, ServeOption], defaults: Settings) -> list[str]:
    description = Settings.model_fields[field].description or ""
    return [
        f"#### `{field}`",
        "",
        _cell(description),
        "",
        "| flag | environment variable | TOML key | default | accepted values |",
        "|---|---|---|---|---|",
        f"| {flags_text(field, options)} | {environment_text(field)} | {toml_text(field)} | "
        f"{default_text(field, defaults)} | {accepted_text(field)} |",
        "",
    ]


def render_reference() -> str:
    """The generated region, markers included."""
    options = serve_options()
    defaults = validate_exactly({})  # defaults alone: the caller's environment stays out
    lines = [BEGIN, "", *_summary(options, defaults), ""]
    for group, fields in _groups(options).items():
        lines.extend([f"### {group}", ""])
        for field in fields:
            lines.extend(_section(field, options, defaults))
    lines.append(END)
    return "\n".join(lines)


# -- vLLM's flags ------------------------------------------------------------------


def vllm_value_text(flag: VllmFlag) -> str:
    """What the flag takes, in words: ``an integer``, ``one of ...``, ``none (on/off)``."""
    if flag.kind in ("flag", "bool"):
        return "none (on/off)" if flag.kind == "bool" else "none"
    words = {
        "int": "an integer",
        "float": "a number",
        "hint": "an integer (`4k`, `1M` allowed)",
        "hint_auto": "an integer (`4k`, `auto`)",
        "loads": "JSON",
        "json": "JSON",
        "config": "a JSON object (or dotted sub-keys)",
        "config_or_level": "a JSON object (or dotted sub-keys, or a level 0-3)",
        "dict_or_str": "text or a JSON object",
        "ids": "comma-separated ids",
        "append": "text, repeatable",
    }.get(flag.kind, "text")
    if flag.choices:
        words = "one of " + ", ".join(_code(choice) for choice in flag.choices)
    if flag.nargs == "+":
        words += ", one or more"
    elif flag.nargs == "?":
        words += " (optional)"
    return words


def vllm_effect_text(flag: VllmFlag) -> str:
    """``takes effect as ...`` or ``accepted, no effect``."""
    target = flag.target
    if target == NO_EFFECT:
        return "accepted, no effect"
    if target.startswith("="):
        note = CONVERSION_NOTES.get(flag.dest)
        return f"takes effect as {note}" if note else "accepted, no effect"
    if target not in Settings.model_fields:
        return "accepted, no effect (yet)"
    return f"takes effect as [`{target}`](#{target})"


def render_vllm_flags() -> str:
    """The generated table of vLLM's flags, markers included."""
    flags = vllm_flags()
    removed = [flag for flag in flags if flag.group.startswith("Removed")]
    effective = sum(vllm_effect_text(flag).startswith("takes") for flag in flags)
    lines = [
        VLLM_BEGIN,
        "",
        f"The {len(flags) - len(removed)} flags of vLLM {VLLM_VERSION}'s `vllm serve` and "
        f"{len(removed)} that older releases took; {effective} take effect here.",
        "",
    ]
    group = None
    for flag in vllm_flags():
        if flag.group != group:
            group = flag.group
            lines.extend([f"#### {group}", "", "| flag | value | here |", "|---|---|---|"])
        names = ", ".join(_code(name) for name in flag.names)
        if flag.off:
            names += " (off: " + ", ".join(_code(name) for name in flag.off) + ")"
        lines.append(f"| {names} | {vllm_value_text(flag)} | {vllm_effect_text(flag)} |")
        if flag is vllm_flags()[-1] or vllm_flags()[vllm_flags().index(flag) + 1].group != group:
            lines.append("")
    lines.append(VLLM_END)
    return "\n".join(lines)


def replace_region(text: str, region: str, begin: str = BEGIN, end_marker: str = END) -> str:
    """``text`` with the part from ``begin`` to ``end_marker`` replaced by ``region``."""
    start, end = text.find(begin), text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"{CONFIGURATION.name} has no '{begin}' ... '{end_marker}' region")
    return text[:start] + region + text[end + len(end_marker) :]


def render_page(text: str) -> str:
    """The page with both generated regions brought up to date."""
    text = replace_region(text, render_reference())
    return replace_region(text, render_vllm_flags(), VLLM_BEGIN, VLLM_END)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="only report whether the region is up to date"
    )
    args = parser.parse_args(argv)
    current = CONFIGURATION.read_text(encoding="utf-8")
    updated = render_page(current)
    if args.check:
        if updated != current:
            print(f"docs/configuration.md is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        print("docs/configuration.md: the generated reference is up to date")
        return 0
    if updated != current:
        CONFIGURATION.write_text(updated, encoding="utf-8")
        print("docs/configuration.md: reference regenerated")
    else:
        print("docs/configuration.md: already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
