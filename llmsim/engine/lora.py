"""LoRA adapters: which exist, which hold one of the ``max_loras`` slots, which are warm.

Mirrors vLLM's two-level cache: a slot ("GPU") holds an adapter while it has requests
running, and keeps holding it when idle until another adapter needs the slot; the CPU
cache keeps up to ``max_cpu_loras`` adapters warm in LRU order. Bringing an adapter that
is not in the CPU cache into a slot costs ``lora_load_latency``. Adapters registered at
start-up or through ``/v1/load_lora_adapter`` are loaded into the CPU cache right away,
as vLLM's ``add_lora`` does.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


class AdapterExistsError(Exception):
    """The adapter name is already registered."""


class AdapterNotFoundError(Exception):
    """No adapter of that name is registered."""


@dataclass(frozen=True, slots=True)
class Adapter:
    name: str
    path: str
    base_model_name: str | None = None


@dataclass(frozen=True, slots=True)
class SlotView:
    """One slot as the dashboard and tests see it."""

    adapter: str
    running: int


class LoraManager:
    def __init__(self, max_loras: int, max_cpu_loras: int, load_latency: float) -> None:
        self.max_loras = max_loras
        self.max_cpu_loras = max(max_cpu_loras, max_loras)
        self.load_latency = load_latency
        self._registry: dict[str, Adapter] = {}
        self._slots: OrderedDict[str, int] = OrderedDict()  # adapter -> running count, LRU first
        self._cpu: OrderedDict[str, None] = OrderedDict()  # warm adapters, LRU first
        self._ready_at: dict[str, float] = {}
        self._int_ids: dict[str, int] = {}
        self._next_int_id = 1

    # -- registry ---------------------------------------------------------------
    def register(self, adapter: Adapter) -> None:
        if adapter.name in self._registry:
            raise AdapterExistsError(adapter.name)
        self._registry[adapter.name] = adapter
        self._int_ids[adapter.name] = self._next_int_id
        self._next_int_id += 1
        self._warm(adapter.name)

    def int_id(self, name: str) -> int:
        """vLLM's ``lora_int_id``: 1, 2, ... in the order adapters were loaded, never reused
        (an adapter unloaded and loaded again gets a new one)."""
        found = self._int_ids.get(name)
        if found is None:  # unloaded while its request ran: a new id, as a reload would get
            found = self._int_ids[name] = self._next_int_id
            self._next_int_id += 1
        return found

    def unregister(self, name: str) -> None:
        """Forget an adapter; requests already holding its slot keep running."""
        if self._registry.pop(name, None) is None:
            raise AdapterNotFoundError(name)
        self._int_ids.pop(name, None)
        self._cpu.pop(name, None)
        if self._slots.get(name) == 0:
            self._evict(name)

    def is_registered(self, name: str) -> bool:
        return name in self._registry

    @property
    def adapters(self) -> list[Adapter]:
        return list(self._registry.values())

    # -- slots ------------------------------------------------------------------
    def can_acquire(self, name: str) -> bool:
        """Whether a request for ``name`` could start now."""
        if name in self._slots or len(self._slots) < self.max_loras:
            return True
        return any(count == 0 for count in self._slots.values())

    def acquire(self, name: str, now: float) -> float:
        """Take (or share) a slot for ``name``; return when the adapter is ready to use."""
        if name in self._slots:
            self._slots[name] += 1
            self._slots.move_to_end(name)
            return max(self._ready_at.get(name, now), now)
        if len(self._slots) >= self.max_loras:
            idle = next(adapter for adapter, count in self._slots.items() if count == 0)
            self._evict(idle)
        cold = name not in self._cpu
        if name in self._registry:
            self._warm(name)
        self._slots[name] = 1
        ready = now + self.load_latency if cold else now
        self._ready_at[name] = ready
        return ready

    def release(self, name: str) -> None:
        count = self._slots.get(name)
        if count is None:
            return
        self._slots[name] = count - 1
        if count == 1 and name not in self._registry:
            self._evict(name)
            self._cpu.pop(name, None)

    def slots(self) -> list[SlotView]:
        return [SlotView(name, count) for name, count in self._slots.items()]

    def warm_adapters(self) -> list[str]:
        return list(self._cpu)

    # -- internals --------------------------------------------------------------
    def _warm(self, name: str) -> None:
        self._cpu[name] = None
        self._cpu.move_to_end(name)
        while len(self._cpu) > self.max_cpu_loras:
            victim = next((a for a in self._cpu if a not in self._slots), None)
            if victim is None:
                break
            del self._cpu[victim]

    def _evict(self, name: str) -> None:
        del self._slots[name]
        self._ready_at.pop(name, None)
