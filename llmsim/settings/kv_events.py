"""vLLM's ``--kv-events-config``: where and how KV-cache events are published.

The keys and defaults are vLLM's ``KVEventsConfig`` (``vllm/config/kv_events.py``), so the
JSON a deployment passes to vLLM works unchanged here, as a flag, an environment variable or
a TOML table.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

PrefixCachingHashAlgo = Literal["sha256", "sha256_cbor", "xxhash", "xxhash_cbor"]
HASH_ALGOS: tuple[str, ...] = get_args(PrefixCachingHashAlgo)
KV_EVENTS_EXTRA = "pip install 'llmsim[kv-events]'"


class KVEventsConfig(BaseModel):
    """One instance's KV-event publisher; data-parallel rank N adds N to the ports."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enable_kv_cache_events: bool = False
    publisher: Literal["null", "zmq"] | None = None
    endpoint: str = "tcp://*:5557"
    replay_endpoint: str | None = None
    buffer_steps: int = Field(10_000, ge=1)
    hwm: int = Field(100_000, ge=0)
    max_queue_size: int = Field(100_000, ge=1)
    topic: str = ""

    @model_validator(mode="after")
    def _default_publisher(self) -> KVEventsConfig:
        # As vLLM: without an explicit publisher, enabling events means ZeroMQ.
        if self.publisher is None:
            chosen = "zmq" if self.enable_kv_cache_events else "null"
            object.__setattr__(self, "publisher", chosen)
        for name in ("endpoint", "replay_endpoint"):
            value = getattr(self, name)
            if value is not None and not value.startswith(("tcp://", "ipc://", "inproc://")):
                raise ValueError(f"{name} must be a tcp://, ipc:// or inproc:// address")
        return self

    @property
    def publishes(self) -> bool:
        """Events go out only when enabled and the publisher is ZeroMQ."""
        return self.enable_kv_cache_events and self.publisher == "zmq"

    def describe(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def missing_kv_events_packages() -> list[str]:
    """The packages publishing needs that are not installed."""
    return [name for name in ("zmq", "msgspec") if importlib.util.find_spec(name) is None]


def xxhash_missing() -> bool:
    return importlib.util.find_spec("xxhash") is None
