"""What each setting accepts, read from the settings model itself.

Shell completion offers a setting's fixed choices and the configuration reference in
``docs/`` describes its type and bounds; both read them here, so neither can disagree with
the validation in :mod:`llmsim.settings.model`.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from llmsim.settings.lora_modules import LoraModule
from llmsim.settings.model import Settings


@dataclass(frozen=True)
class Bounds:
    """Inclusive or exclusive limits from ``ge``/``gt``/``le``/``lt`` and ``min_length``."""

    lower: float | None = None
    lower_inclusive: bool = True
    upper: float | None = None
    upper_inclusive: bool = True
    min_length: int | None = None


def field_info(name: str) -> FieldInfo:
    return Settings.model_fields[name]


def _without_none(annotation: Any) -> Any:
    """``int | None`` -> ``int``; other annotations unchanged."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def is_optional(name: str) -> bool:
    """The setting may be left unset (``None``)."""
    annotation = field_info(name).annotation
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


def item_annotation(name: str) -> Any:
    """The element type of a list setting, or the setting's own type (``None`` removed)."""
    annotation = _without_none(field_info(name).annotation)
    if get_origin(annotation) is list:
        return get_args(annotation)[0]
    return annotation


def is_list(name: str) -> bool:
    return get_origin(_without_none(field_info(name).annotation)) is list


def choices(name: str) -> tuple[str, ...]:
    """The fixed values of a ``Literal`` setting or a list of them; empty otherwise."""
    annotation = item_annotation(name)
    if get_origin(annotation) is Literal:
        return tuple(str(value) for value in get_args(annotation))
    return ()


def bounds(name: str) -> Bounds:
    """The numeric limits and minimum length declared on the field."""
    found: dict[str, Any] = {}
    for item in field_info(name).metadata:
        if isinstance(item, annotated_types.Ge):
            found.update(lower=item.ge, lower_inclusive=True)
        elif isinstance(item, annotated_types.Gt):
            found.update(lower=item.gt, lower_inclusive=False)
        elif isinstance(item, annotated_types.Le):
            found.update(upper=item.le, upper_inclusive=True)
        elif isinstance(item, annotated_types.Lt):
            found.update(upper=item.lt, upper_inclusive=False)
        elif isinstance(item, annotated_types.MinLen):
            found.update(min_length=item.min_length)
    return Bounds(**found)


def marker(name: str) -> str | None:
    """``duration`` or ``size`` for settings parsed with units, else ``None``."""
    extra = field_info(name).json_schema_extra
    if isinstance(extra, dict):
        for key in ("duration", "size"):
            if extra.get(key):
                return key
    return None


def kind(name: str) -> str:
    """A short word for the value type: duration, size, integer, number, choice, text, ..."""
    unit = marker(name)
    if unit:
        return unit
    annotation = item_annotation(name)
    if choices(name):
        return "choice"
    known: dict[Any, str] = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "text",
        Path: "path",
        SecretStr: "secret",
        LoraModule: "adapter",
    }
    return known.get(annotation, getattr(annotation, "__name__", str(annotation)))


def completer(name: str) -> Any:
    """A shell-completion callback offering the setting's choices (after the last comma for
    list settings), or ``None`` when the setting has no fixed choices."""
    options = choices(name)
    if not options:
        return None
    several = is_list(name)

    def complete(incomplete: str) -> list[str]:
        head, comma, last = incomplete.rpartition(",") if several else ("", "", incomplete)
        prefix = head + comma
        return [prefix + option for option in options if option.startswith(last)]

    return complete
