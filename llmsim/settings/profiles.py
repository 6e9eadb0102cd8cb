"""Named profiles: ``[profiles.NAME]`` tables of a TOML file, and the built-in ones.

A named profile is a set of settings chosen with ``--profile NAME``. It sits between the
environment and the file's top-level keys, so a file can hold shared values at the top
and several variants below. Built-in profiles ship inside the package
(``builtin_profiles.toml``) and are found when the file has no profile of that name.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from llmsim.settings.model import LAYER_FIELDS, ConfigError, Settings
from llmsim.settings.renamed import RENAMED

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

BUILTIN = "built-in"
PROFILES_TABLE = "profiles"
DESCRIPTION_KEY = "description"
"""A profile table may describe itself; the text is shown by ``llmsim profiles list``."""


@dataclass(frozen=True)
class NamedProfile:
    name: str
    origin: str
    """``built-in`` or the path of the file that defines it."""
    description: str
    values: Mapping[str, Any]


def unknown_keys(table: Mapping[str, Any]) -> list[str]:
    """Keys of a settings table that are not settings (or that choose layers)."""
    return sorted(
        key
        for key in table
        if (key not in Settings.model_fields and key not in RENAMED) or key in LAYER_FIELDS
    )


def parse_profiles(table: Any, origin: str) -> dict[str, NamedProfile]:
    """The ``[profiles.*]`` tables of one file, validated for shape and key names."""
    if not isinstance(table, dict):
        raise ConfigError([f"{origin}: 'profiles' must be a table of [profiles.NAME] tables"])
    profiles: dict[str, NamedProfile] = {}
    problems: list[str] = []
    for name, body in table.items():
        if not isinstance(body, dict):
            problems.append(f"{origin}: profiles.{name} must be a table")
            continue
        values = dict(body)
        description = values.pop(DESCRIPTION_KEY, "")
        if not isinstance(description, str):
            problems.append(f"{origin}: profiles.{name}.description must be a string")
        for key in unknown_keys(values):
            hint = (
                ' (a profile name with dots must be quoted: [profiles."a.b"])'
                if isinstance(values[key], dict)
                else ""
            )
            problems.append(f"{origin}: unknown key {key!r} in profile {name!r}{hint}")
        profiles[name] = NamedProfile(name, origin, str(description), values)
    if problems:
        raise ConfigError(problems)
    return profiles


def builtin_profiles() -> dict[str, NamedProfile]:
    """The profiles shipped with llmsim, by name."""
    text = resources.files("llmsim.settings").joinpath("builtin_profiles.toml").read_text("utf-8")
    return parse_profiles(tomllib.loads(text).get(PROFILES_TABLE, {}), BUILTIN)


def available_profiles(from_file: Mapping[str, NamedProfile]) -> dict[str, NamedProfile]:
    """Every profile ``--profile`` can pick; a file's profile hides a built-in of that name."""
    return {**builtin_profiles(), **from_file}


def find_profile(name: str, from_file: Mapping[str, NamedProfile]) -> NamedProfile:
    profiles = available_profiles(from_file)
    if name in profiles:
        return profiles[name]
    known = ", ".join(sorted(profiles)) or "none"
    raise ConfigError([f"--profile: unknown profile {name!r} (available: {known})"])


@dataclass(frozen=True)
class Calibration:
    """What a built-in profile's step model was fitted on, and what it lacks."""

    fitted: tuple[str, ...]
    missing: str


def builtin_calibration(name: str) -> Calibration | None:
    """The calibration notes of a built-in profile (None for other profiles)."""
    text = resources.files("llmsim.settings").joinpath("builtin_calibration.toml")
    table = tomllib.loads(text.read_text("utf-8")).get("calibration", {}).get(name)
    if not isinstance(table, dict):
        return None
    return Calibration(tuple(table.get("fitted", ())), str(table.get("missing", "")))
