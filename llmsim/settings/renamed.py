"""Settings that were renamed: old keys still load, with a one-line notice of what they became.

A renamed key is accepted wherever settings are read (flags, ``LLMSIM_*`` variables, TOML
files and profiles); its value moves to the new name unless the new name is given too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

RENAMED: dict[str, tuple[str, str]] = {
    "prefill_overhead": (
        "frontend_latency",
        "the fixed time each request spends before the engine; it delays that request's "
        "admission and no longer lengthens engine steps",
    ),
}
"""Old key -> (new key, what the new key means)."""


def migrate(values: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """``values`` with renamed keys moved to their new names, and a notice for each."""
    migrated = dict(values)
    notices = []
    for old, (new, meaning) in RENAMED.items():
        if old not in migrated:
            continue
        value = migrated.pop(old)
        if new in migrated:
            notices.append(f"{where}: {old} is now {new}; {new} is also given, so {old} is ignored")
            continue
        migrated[new] = value
        notices.append(f"{where}: {old} is now {new} ({meaning})")
    return migrated, notices


def renamed_environment() -> dict[str, str]:
    """``LLMSIM_*`` variables under an old name whose new name is not set, by old key."""
    found = {}
    for old, (new, _) in RENAMED.items():
        value = os.environ.get(f"LLMSIM_{old.upper()}")
        if value is not None and f"LLMSIM_{new.upper()}" not in os.environ:
            found[old] = value
    return found
