"""vLLM's sleep mode (≥ 0.17): pause the scheduler, then give back (simulated) GPU memory.

Sleeping first pauses the engine's scheduler as vLLM's ``pause_scheduler(mode)`` does:
``abort`` ends every request in flight with the tokens it has, ``wait`` lets them finish
(the sleep call returns once they have), ``keep`` freezes them until wake-up. While paused,
new requests are accepted and queue (they count as waiting) until wake-up.

Level 0 only pauses scheduling. Level 1 offloads the weights and drops the KV cache, level
2 discards both; dropping goes through the engine's ``drop_kv_cache()`` (which tells the
KV-event listener ``AllBlocksCleared``). Waking up restores the memory of the ``tags``
named (``weights``, ``kv_cache``; all when none) and always resumes the scheduler; the
instance counts as sleeping while the scheduler is paused or any tag is still asleep.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from llmsim.engine import PAUSE_MODES

SLEEP_STATES = ("awake", "weights_offloaded", "discard_all")
WAKE_TAGS = ("weights", "kv_cache")
SCHEDULING_TAG = "scheduling"
"""vLLM's virtual tag to wake from level 0: it only resumes the scheduler, as every wake does."""
SLEEP_LEVELS = (0, 1, 2)


class SleepModeDisabledError(Exception):
    """Sleep was asked for on an instance started without ``--enable-sleep-mode``."""


class SleepArgumentError(ValueError):
    """A ``level`` or ``mode`` vLLM does not know; ``param`` names which."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class SleepController:
    """The sleep state of one instance and vLLM's ``vllm:engine_sleep_state`` gauge."""

    def __init__(
        self,
        engine: Any,
        enabled: bool,
        registry: CollectorRegistry | None = None,
        labels: Sequence[tuple[str, str]] = (("", "0"),),
    ) -> None:
        """``engine`` is one engine or all of a server's; ``labels`` are the ``model_name``
        and ``engine`` labels of each engine's gauge series."""
        self.engine = engine
        self.enabled = enabled
        self.level = 0
        """The memory level asleep: 1 or 2 until every tag woke, else 0."""
        self.paused = False
        self._asleep_tags: set[str] = set()
        self._gauges: list[dict[str, Any]] = []
        if enabled and registry is not None:
            gauge = Gauge(
                "vllm:engine_sleep_state",
                "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means "
                "engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 "
                "means sleep level 2.",
                ["model_name", "engine", "sleep_state"],
                registry=registry,
            )
            self._gauges = [
                {state: gauge.labels(*engine_labels, state) for state in SLEEP_STATES}
                for engine_labels in labels
            ]
            self._show()

    @property
    def is_sleeping(self) -> bool:
        """vLLM's ``is_sleeping``: the scheduler is paused or some memory is still asleep."""
        return self.paused or bool(self._asleep_tags)

    async def sleep(self, level: int = 1, mode: str = "abort") -> None:
        """Pause the scheduler with ``mode``, then put the memory of ``level`` to sleep."""
        if not self.enabled:
            raise SleepModeDisabledError("Sleep mode is not enabled in the model config")
        if level not in SLEEP_LEVELS:
            raise SleepArgumentError("level", f"sleep level must be 0, 1 or 2, not {level}")
        if mode not in PAUSE_MODES:
            raise SleepArgumentError("mode", f"Invalid pause mode: {mode}")
        self.paused = True
        self._show()
        pause = getattr(self.engine, "pause", None)
        if callable(pause):
            await pause(mode)
        if not self.paused:
            return  # woken while a ``wait`` pause drained: stay awake, as it asked
        if level >= 1:
            drop = getattr(self.engine, "drop_kv_cache", None)
            if callable(drop):
                drop()
            if not self._asleep_tags:  # vLLM leaves memory already asleep as it is
                self.level = level
                self._asleep_tags = set(WAKE_TAGS)
        self._show()

    def wake_up(self, tags: Sequence[str] | None = None) -> None:
        """Wake the memory of ``tags`` (all when none), then resume the scheduler."""
        if not self.enabled:
            raise SleepModeDisabledError("Sleep mode is not enabled in the model config")
        memory = None if tags is None else [tag for tag in tags if tag != SCHEDULING_TAG]
        if memory is None or memory:
            self._asleep_tags -= set(memory or WAKE_TAGS)
        if not self._asleep_tags:
            self.level = 0
        if self.paused:
            self.paused = False
            resume = getattr(self.engine, "resume", None)
            if callable(resume):
                resume()
        self._show()

    def _show(self) -> None:
        for gauges in self._gauges:
            gauges["awake"].set(0 if self.is_sleeping else 1)
            gauges["weights_offloaded"].set(1 if self.level == 1 else 0)
            gauges["discard_all"].set(1 if self.level == 2 else 0)
