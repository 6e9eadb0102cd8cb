"""The KV-cache features of one instance: event publisher, block hasher, sleep, P/D agent.

``create_app`` calls :func:`install_kv_features` once; the step engine takes the listener
and the hasher from here (``app[KV_LISTENER]``, ``app[BLOCK_HASHER]``).
"""

from __future__ import annotations

from aiohttp import web

from llmsim.api.kv_transfer import KVTransferAgent
from llmsim.api.sleep import SLEEP
from llmsim.engine import Engine
from llmsim.engine.block_hash import BlockHasher, internal_block_hasher
from llmsim.engine.kv_listener import NullKVCacheListener
from llmsim.engine.prefix_hash import make_block_hasher
from llmsim.observability.kv_publishing import ClosableKVCacheListener, make_kv_listener
from llmsim.observability.metrics import Metrics
from llmsim.runtime.sleep import SleepController
from llmsim.settings.model import Settings

KV_LISTENER: web.AppKey[ClosableKVCacheListener] = web.AppKey("kv_listener")
BLOCK_HASHER: web.AppKey[BlockHasher] = web.AppKey("block_hasher")
KV_TRANSFER = web.AppKey("kv_transfer", KVTransferAgent)


def install_kv_features(
    app: web.Application, settings: Settings, engine: Engine, metrics: Metrics, rank: int
) -> None:
    listener = make_kv_listener(settings, rank)
    app[KV_LISTENER] = listener
    # vLLM's hashes where subscribers see them; a cheaper digest of the same keys otherwise.
    publishes = not isinstance(listener, NullKVCacheListener)
    app[BLOCK_HASHER] = (
        make_block_hasher(settings.prefix_caching_hash_algo) if publishes else internal_block_hasher
    )
    app[KV_TRANSFER] = KVTransferAgent(settings, rank)
    app[SLEEP] = SleepController(
        engine,
        settings.enable_sleep_mode,
        metrics.registry,
        (settings.model_label, str(rank)),
    )

    async def close_listener(_: web.Application) -> None:
        listener.close()

    app.on_cleanup.append(close_listener)
