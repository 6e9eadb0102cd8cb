"""vLLM's generation config, as far as it reaches a simulator: max_tokens.

vLLM takes default sampling parameters from the model's ``generation_config.json``
(``--generation-config auto``), from none (``vllm``) or from a folder's, with
``--override-generation-config`` merged over them. Of those parameters only
``max_new_tokens`` changes what a simulator answers: it is the ``max_tokens`` of a request
that sets none, and, when it comes from a folder or from the override, a limit on every
request (vLLM's ``get_max_tokens`` takes the least of the room left in the context window,
the request's value or that default, and that limit). A request's own ``max_tokens`` is
still checked against the context window first, so the same requests get a 400.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmsim.settings.model import Settings

CONFIG_FILE = "generation_config.json"


@dataclass(frozen=True, slots=True)
class OutputLimits:
    default: int | None
    """``max_tokens`` of a request that sets none."""
    cap: int | None
    """The most tokens any answer gets."""

    def budget(self, room: int, requested: int | None) -> int:
        """The most tokens an answer gets with ``room`` left in the context window."""
        limit = self.cap if requested is not None else _least(self.default, self.cap)
        return room if limit is None else min(room, limit)


def output_limits(settings: Settings) -> OutputLimits | None:
    """What the server's generation config says of ``max_tokens``; None: nothing."""
    source = settings.generation_config
    config = {} if source == "vllm" else _read(settings.model if source == "auto" else source)
    override = settings.override_generation_config or {}
    config.update(override)
    default = _tokens(config.get("max_new_tokens"))
    cap = default if source not in ("auto", "vllm") else _tokens(override.get("max_new_tokens"))
    if default is None and cap is None:
        return None
    return OutputLimits(default, cap)


def _read(folder: str) -> dict[str, Any]:
    """A folder's generation config; empty if it has none (as vLLM finds none)."""
    try:
        data = json.loads((Path(folder) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _tokens(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _least(*values: int | None) -> int | None:
    given = [value for value in values if value is not None]
    return min(given) if given else None
