"""vLLM's sleep mode: an idle instance gives back its (simulated) GPU memory.

Level 1 offloads the weights and drops the KV cache, level 2 discards both; waking up
restores them (all at once, or only the ``tags`` named: ``weights``, ``kv_cache``). While
asleep the instance refuses inference. Dropping the KV cache goes through the engine's
``drop_kv_cache()`` when the engine has a KV cache, which also tells the KV-event
listener (``AllBlocksCleared``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

SLEEP_STATES = ("awake", "weights_offloaded", "discard_all")
WAKE_TAGS = ("weights", "kv_cache")


class SleepModeDisabledError(Exception):
    """Sleep was asked for on an instance started without ``--enable-sleep-mode``."""


class SleepController:
    """The sleep level of one instance and vLLM's ``vllm:engine_sleep_state`` gauge."""

    def __init__(
        self,
        engine: Any,
        enabled: bool,
        registry: CollectorRegistry | None = None,
        labels: tuple[str, str] = ("", "0"),
    ) -> None:
        self.engine = engine
        self.enabled = enabled
        self.level = 0
        self._asleep_tags: set[str] = set()
        self._gauges: dict[str, Any] = {}
        if enabled and registry is not None:
            gauge = Gauge(
                "vllm:engine_sleep_state",
                "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means "
                "engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 "
                "means sleep level 2.",
                ["model_name", "engine", "sleep_state"],
                registry=registry,
            )
            self._gauges = {state: gauge.labels(*labels, state) for state in SLEEP_STATES}
            self._show()

    @property
    def is_sleeping(self) -> bool:
        return self.level > 0

    def sleep(self, level: int) -> None:
        if not self.enabled:
            raise SleepModeDisabledError("Sleep mode is not enabled in the model config")
        if level not in (1, 2):
            raise ValueError(f"sleep level must be 1 or 2, not {level}")
        drop = getattr(self.engine, "drop_kv_cache", None)
        if callable(drop):
            drop()
        self.level = level
        self._asleep_tags = set(WAKE_TAGS)
        self._show()

    def wake_up(self, tags: Sequence[str] | None = None) -> None:
        if not self.enabled:
            raise SleepModeDisabledError("Sleep mode is not enabled in the model config")
        self._asleep_tags -= set(tags or WAKE_TAGS)
        if not self._asleep_tags:
            self.level = 0
        self._show()

    def _show(self) -> None:
        if not self._gauges:
            return
        awake = 0 if self.is_sleeping else 1
        self._gauges["awake"].set(awake)
        self._gauges["weights_offloaded"].set(1 if self.level == 1 else 0)
        self._gauges["discard_all"].set(1 if self.level == 2 else 0)
