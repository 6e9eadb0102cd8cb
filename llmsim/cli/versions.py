"""What ``llmsim --version`` reports: llmsim, Python, the platform and the key dependencies.

Bug reports about wire formats or metrics usually depend on the aiohttp, pydantic or
prometheus-client in use, so the version output names them all in one go.
"""

from __future__ import annotations

import platform
from importlib import metadata

from llmsim import __version__

NOT_INSTALLED = "not installed"

# Distribution names as pip knows them; the optional speed-ups come last.
KEY_DEPENDENCIES = (
    "aiohttp",
    "pydantic",
    "pydantic-settings",
    "typer",
    "rich",
    "prometheus-client",
)
OPTIONAL_DEPENDENCIES = ("uvloop", "orjson", "msgspec")


def distribution_version(name: str) -> str:
    """The installed version of a distribution, or ``not installed``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED


def version_lines() -> list[str]:
    """One line each: llmsim first (so ``head -1`` keeps working), then Python, then deps."""
    python = f"{platform.python_version()} ({platform.python_implementation()})"
    width = max(len(name) for name in ("platform", *KEY_DEPENDENCIES, *OPTIONAL_DEPENDENCIES))
    lines = [
        f"llmsim {__version__}",
        f"{'python':<{width}}  {python}",
        f"{'platform':<{width}}  {platform.platform(terse=True)}",
    ]
    lines.extend(f"{name:<{width}}  {distribution_version(name)}" for name in KEY_DEPENDENCIES)
    lines.extend(f"{name:<{width}}  {_optional_version(name)}" for name in OPTIONAL_DEPENDENCIES)
    return lines


def _optional_version(name: str) -> str:
    version = distribution_version(name)
    return f"{version} (optional: the [fast] extra)" if version == NOT_INSTALLED else version
