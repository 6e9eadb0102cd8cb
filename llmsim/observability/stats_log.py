"""vLLM's periodic stats line (``--log-stats``; vLLM's ``--disable-log-stats`` turns it off).

Every interval (vLLM's ``VLLM_LOG_STATS_INTERVAL``, 10 s) each engine logs, as vLLM's
``LoggingStatLogger`` does::

    Engine 000: Avg prompt throughput: 51.2 tokens/s, Avg generation throughput: 80.0
    tokens/s, Running: 2 reqs, Waiting: 0 reqs, GPU KV cache usage: 0.4%, Prefix cache hit
    rate: 12.5%

at info, or at debug when this interval and the one before saw no tokens (vLLM keeps an
idle server quiet). Everything is read from the counters and gauges the metrics already
keep, once per interval: the request path does no extra work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmsim.observability.metrics import Metrics

logger = logging.getLogger("llmsim.stats")


@dataclass(slots=True)
class _Engine:
    """One engine's counters as last logged, and what the last line said."""

    index: int
    metrics: Metrics
    counts: tuple[float, ...] = ()
    hit_rate: float = 0.0
    was_busy: bool = False


def _counts(metrics: Metrics) -> tuple[float, ...]:
    """Prompt and generated tokens, preemptions, prefix-cache queries and hits so far."""
    return (
        metrics.prompt_tokens.value,
        metrics.generation_tokens.value,
        metrics.preemptions.value,
        metrics.prefix_cache_queries.value,
        metrics.prefix_cache_hits.value,
    )


class StatsLog:
    """The stats lines of one server's engines (``(data-parallel rank, metrics)`` pairs)."""

    def __init__(
        self,
        engines: Sequence[tuple[int, Metrics]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._last = clock()
        self._engines = [_Engine(index, metrics, _counts(metrics)) for index, metrics in engines]

    def log(self) -> None:
        """One line per engine for the time since the last call."""
        now = self._clock()
        elapsed, self._last = now - self._last, now
        for engine in self._engines:
            self._log_engine(engine, elapsed)

    async def run(self, interval: float) -> None:
        """Log every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.log()

    def _log_engine(self, engine: _Engine, elapsed: float) -> None:
        counts = _counts(engine.metrics)
        prompt, generation, preempted, queries, hits = (
            now - then for now, then in zip(counts, engine.counts, strict=True)
        )
        engine.counts = counts
        if queries > 0:  # an interval without lookups keeps the last rate, as vLLM's window
            engine.hit_rate = hits / queries
        prompt_rate = prompt / elapsed if elapsed > 0 else 0.0
        generation_rate = generation / elapsed if elapsed > 0 else 0.0
        busy = bool(prompt_rate or generation_rate)
        level = logging.INFO if busy or engine.was_busy else logging.DEBUG
        engine.was_busy = busy
        if not logger.isEnabledFor(level):
            return
        running, waiting, usage = engine.metrics.current_load()
        parts = [
            "Engine %03d: Avg prompt throughput: %.1f tokens/s",
            "Avg generation throughput: %.1f tokens/s",
            "Running: %d reqs",
            "Waiting: %d reqs",
        ]
        args: list[float] = [engine.index, prompt_rate, generation_rate, running, waiting]
        if preempted > 0:
            parts.append("Preemptions: %d")
            args.append(preempted)
        parts += ["GPU KV cache usage: %.1f%%", "Prefix cache hit rate: %.1f%%"]
        args += [usage * 100, engine.hit_rate * 100]
        logger.log(level, ", ".join(parts), *args)
