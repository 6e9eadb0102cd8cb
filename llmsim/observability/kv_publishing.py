"""Choose the KV-cache listener for one instance: a ZeroMQ publisher or nothing.

Kept apart from :mod:`llmsim.observability.kv_events` so that pyzmq and msgspec (the
``llmsim[kv-events]`` extra) are imported only when events are published.
"""

from __future__ import annotations

import logging
from typing import Protocol

from llmsim.engine.kv_listener import KVCacheListener, NullKVCacheListener
from llmsim.settings.model import Settings

log = logging.getLogger("llmsim.kv_events")


class ClosableKVCacheListener(KVCacheListener, Protocol):
    def close(self) -> None:
        """Flush what is pending and release sockets and threads."""


class NullKVEventPublisher(NullKVCacheListener):
    """Publishes nothing: the default, and what ``"publisher": "null"`` asks for."""

    def close(self) -> None:
        pass


class KVEventsStartError(Exception):
    """The publisher's sockets could not be opened (address in use, bad address)."""


def make_kv_listener(settings: Settings, rank: int = 0) -> ClosableKVCacheListener:
    """The listener the engine's block pool reports to; rank N publishes on port + N."""
    config = settings.kv_events_config
    if config is None or not config.publishes:
        return NullKVEventPublisher()
    import zmq

    from llmsim.observability.kv_events import KVEventPublisher

    if settings.latency_model != "step":
        log.warning(
            "KV events: only --latency-model step simulates the KV cache block by block; "
            "with the %s model the publisher sends no events",
            settings.latency_model,
        )

    try:
        return KVEventPublisher(config, rank)
    except (zmq.ZMQError, ValueError) as exc:
        where = f"{config.endpoint} (data-parallel rank {rank})" if rank else config.endpoint
        raise KVEventsStartError(f"KV events: cannot open {where}: {exc}") from None
