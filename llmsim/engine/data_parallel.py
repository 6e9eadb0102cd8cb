"""Several engines behind one API server, balanced as vLLM's API server balances its
data-parallel engines (``DPLBAsyncMPClient.get_core_engine_for_request`` in
``vllm/v1/engine/core_client.py``).

vLLM scores each engine by its queue, ``waiting + running``, and adds a penalty for
waiting requests on an engine whose KV cache is more than half full (from nothing at
50% usage to three times the waiting count at 100%); the lowest score wins. The scan
starts one engine further on every pick, so that ties (idle engines) go round-robin.
vLLM reads the counts from a coordinator every 100 ms and keeps its own in-flight count
as a floor; here the counts are the engines' own, always current, so the floor is them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import NamedTuple

from llmsim.engine.engine import Engine
from llmsim.engine.lora import Adapter
from llmsim.settings.model import Settings

KV_PRESSURE_FLOOR = 0.5
"""KV-cache usage above which waiting requests weigh more."""
WAITING_PENALTY = 6.0
"""How much more, per unit of usage above the floor (3x the waiting count when full)."""


class EngineLoad(NamedTuple):
    """What vLLM's balancer reads of one engine."""

    waiting: int
    running: int
    kv_usage: float


def engine_load(engine: Engine) -> EngineLoad:
    """The engine's queue and KV-cache usage, as its ``vllm:`` gauges report them."""
    scheduler = engine.scheduler
    if engine.step is not None:
        core = engine.step.engine
        return EngineLoad(scheduler.num_waiting + core.num_waiting, core.num_running, core.usage())
    if engine.blocks is not None:
        usage = engine.blocks.usage()
    else:
        usage = min(scheduler.kv_tokens() / engine.settings.kv_cache_size, 1.0)
    return EngineLoad(scheduler.num_waiting, scheduler.num_running, usage)


def load_score(load: EngineLoad) -> float:
    """vLLM's score: the queue, plus the waiting requests' KV-pressure penalty."""
    score = float(load.waiting + load.running)
    if load.waiting:
        score += load.waiting * WAITING_PENALTY * max(0.0, load.kv_usage - KV_PRESSURE_FLOOR)
    return score


def pick_engine(loads: Sequence[EngineLoad], start: int) -> int:
    """The index of the least loaded engine, scanning from ``start``; ties go to the first seen."""
    count = len(loads)
    best, best_score = start % count, float("inf")
    for offset in range(count):
        index = (start + offset) % count
        score = load_score(loads[index])
        if score < best_score:
            best, best_score = index, score
    return best


class DataParallelEngines:
    """The engines of one server, in rank order, and what vLLM's API server does to all."""

    def __init__(self, engines: Sequence[Engine], ranks: Sequence[int]) -> None:
        if len(engines) != len(ranks) or not engines:
            raise ValueError("one rank per engine, at least one engine")
        self.engines = tuple(engines)
        for engine in self.engines:
            engine.siblings = self.engines  # the admission limits count them all
        self.ranks = tuple(ranks)
        self._index = {rank: index for index, rank in enumerate(self.ranks)}
        self._start = 0

    @property
    def first(self) -> Engine:
        return self.engines[0]

    def choose(self) -> int:
        """The index of the engine the next request goes to (vLLM's internal balancing)."""
        if len(self.engines) == 1:
            return 0
        chosen = pick_engine([engine_load(engine) for engine in self.engines], self._start)
        self._start = (self._start + 1) % len(self.engines)
        return chosen

    def index_of(self, rank: int) -> int | None:
        """The index of the engine of ``rank`` (a request's ``X-data-parallel-rank``)."""
        return self._index.get(rank)

    # -- what applies to every engine ---------------------------------------------
    def register_adapter(self, adapter: Adapter) -> None:
        """Load an adapter on every engine (the first refuses a name it already has)."""
        for engine in self.engines:
            engine.loras.register(adapter)

    def unregister_adapter(self, name: str) -> None:
        for engine in self.engines:
            engine.loras.unregister(name)

    def reconfigure(self, settings: Settings) -> None:
        for engine in self.engines:
            engine.reconfigure(settings)

    async def pause(self, mode: str = "abort") -> None:
        await asyncio.gather(*(engine.pause(mode) for engine in self.engines))

    def resume(self) -> None:
        for engine in self.engines:
            engine.resume()

    def drop_kv_cache(self) -> None:
        for engine in self.engines:
            engine.drop_kv_cache()

    @property
    def busy(self) -> int:
        """Sequences running or waiting on any engine."""
        return sum(e.scheduler.num_running + e.scheduler.num_waiting for e in self.engines)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until every engine is idle; False if ``timeout`` passed first."""
        results = await asyncio.gather(*(engine.wait_idle(timeout) for engine in self.engines))
        return all(results)

    def abort_all(self) -> int:
        return sum(engine.abort_all() for engine in self.engines)
