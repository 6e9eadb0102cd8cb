"""vLLM's ``VLLM_HTTP_TIMEOUT_KEEP_ALIVE``: how long an idle keep-alive connection stays open.

vLLM passes it (whole seconds, default 5) to uvicorn. llmsim honours it when it is set, so a
gateway test can see connections closed as vLLM closes them; unset, aiohttp's own timeout
(75 s) applies as before.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

KEEP_ALIVE_ENV = "VLLM_HTTP_TIMEOUT_KEEP_ALIVE"


class KeepAliveError(ValueError):
    """The variable is not a whole number of seconds."""


def keep_alive_options(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """aiohttp's ``keepalive_timeout`` from the variable, or nothing when it is unset."""
    raw = (os.environ if environ is None else environ).get(KEEP_ALIVE_ENV)
    if raw is None or not raw.strip():
        return {}
    try:
        seconds = int(raw)
    except ValueError:
        raise KeepAliveError(
            f"{KEEP_ALIVE_ENV} must be a whole number of seconds, not {raw!r}"
        ) from None
    if seconds < 0:
        raise KeepAliveError(f"{KEEP_ALIVE_ENV} must not be negative, not {raw!r}")
    return {"keepalive_timeout": float(seconds)}
