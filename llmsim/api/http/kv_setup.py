"""The KV-cache features of one server: event publishers, block hasher, sleep, P/D agents.

``create_app`` calls :func:`install_kv_features` once; each data-parallel engine gets its
own publisher (rank N publishes on the configured ports + N) and P/D agent, and the step
engines (and the block-level caches of ``kv_blocks``) take their listener and the shared
hasher from here. ``app[KV_LISTENER]`` and
``app[KV_TRANSFER]`` are the first engine's.
"""

from __future__ import annotations

from aiohttp import web

from llmsim.api.admin.sleep import SLEEP
from llmsim.engine.block_hash import BlockHasher, internal_block_hasher
from llmsim.engine.data_parallel import DataParallelEngines
from llmsim.engine.kv_listener import NullKVCacheListener
from llmsim.engine.prefix_hash import make_block_hasher
from llmsim.observability.kv_publishing import ClosableKVCacheListener, make_kv_listener
from llmsim.observability.metrics import Metrics
from llmsim.runtime.sleep import SleepController
from llmsim.service.kv_transfer import KVTransferAgent
from llmsim.settings.model import Settings

KV_LISTENER: web.AppKey[ClosableKVCacheListener] = web.AppKey("kv_listener")
BLOCK_HASHER: web.AppKey[BlockHasher] = web.AppKey("block_hasher")
KV_TRANSFER = web.AppKey("kv_transfer", KVTransferAgent)
KV_AGENTS: web.AppKey[tuple[KVTransferAgent, ...]] = web.AppKey("kv_agents")
"""One P/D agent per engine, in the engines' order."""


def install_kv_features(
    app: web.Application, settings: Settings, engines: DataParallelEngines, metrics: Metrics
) -> None:
    listeners: list[ClosableKVCacheListener] = []

    async def close_listeners(_: web.Application) -> None:
        for listener in listeners:
            listener.close()

    app.on_cleanup.append(close_listeners)
    listeners.extend(make_kv_listener(settings, rank) for rank in engines.ranks)
    app[KV_LISTENER] = listeners[0]
    # vLLM's hashes where subscribers see them; a cheaper digest of the same keys otherwise.
    publishes = not isinstance(listeners[0], NullKVCacheListener)
    hasher = (
        make_block_hasher(settings.prefix_caching_hash_algo) if publishes else internal_block_hasher
    )
    app[BLOCK_HASHER] = hasher
    for engine, listener in zip(engines.engines, listeners, strict=True):
        if engine.step is not None:
            engine.step.engine.attach_kv(listener, hasher)
        elif engine.blocks is not None:
            engine.blocks.attach(listener, hasher)
    app[KV_AGENTS] = tuple(KVTransferAgent(settings, rank) for rank in engines.ranks)
    app[KV_TRANSFER] = app[KV_AGENTS][0]
    app[SLEEP] = SleepController(
        engines,
        settings.enable_sleep_mode,
        metrics.registry,
        [(settings.model_label, str(rank)) for rank in engines.ranks],
    )
