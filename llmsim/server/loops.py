"""Pick the fastest available event loop: uvloop when installed (``llmsim[fast]``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def loop_factory() -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The name and factory of the event loop to run on."""
    try:
        import uvloop
    except ImportError:
        return "asyncio", asyncio.new_event_loop
    return "uvloop", uvloop.new_event_loop
