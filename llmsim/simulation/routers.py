"""Routing policies: which instance a request goes to, from what a router in front of a vLLM
fleet could know at that moment (its own in-flight counts, the instances' metrics, the KV
events they publish)."""

from __future__ import annotations

import random
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Protocol

from llmsim.engine.sequence import Sequence
from llmsim.engine.step.kv_cache import StepSequence
from llmsim.engine.step.virtual import VirtualRun

AFFINITY_BLOCKS = 4
"""Prefix-affinity hashes this many first blocks of the prompt: a shared system prompt of
that length or longer sends its requests to one instance."""


@dataclass(slots=True)
class Instance:
    """One simulated server and the router's view of it."""

    name: str
    run: VirtualRun
    in_flight: int = 0
    """Requests routed here that have not finished (what a router counts itself)."""
    adapters: frozenset[str] = frozenset()
    """The LoRA adapters this instance serves: a request naming one goes to one of them."""

    def usage(self) -> float:
        return self.run.engine.usage()

    def cached_blocks(self, sequence: Sequence) -> int:
        """Blocks of the prompt this instance holds in its prefix cache right now."""
        engine = self.run.engine
        if not engine.enable_prefix_caching or sequence.prompt_token_ids is None:
            return 0
        return len(engine.kv.lookup(StepSequence(sequence, sequence.prompt_token_ids)))


class Router(Protocol):
    def choose(self, sequence: Sequence, instances: Seq[Instance]) -> int:
        """The index of the instance ``sequence`` goes to."""


def _least_loaded(candidates: Seq[int], instances: Seq[Instance]) -> int:
    return min(candidates, key=lambda k: (instances[k].in_flight, k))


@dataclass(slots=True)
class RoundRobin:
    _next: int = 0

    def choose(self, sequence: Sequence, instances: Seq[Instance]) -> int:
        index = self._next % len(instances)
        self._next += 1
        return index


@dataclass(slots=True)
class RandomChoice:
    rng: random.Random

    def choose(self, sequence: Sequence, instances: Seq[Instance]) -> int:
        return self.rng.randrange(len(instances))


@dataclass(slots=True)
class LeastRequests:
    def choose(self, sequence: Sequence, instances: Seq[Instance]) -> int:
        return _least_loaded(range(len(instances)), instances)


@dataclass(slots=True)
class LeastKVUsage:
    def choose(self, sequence: Sequence, instances: Seq[Instance]) -> int:
        return min(range(len(instances)), key=lambda k: (instances[k].usage(), k))


@dataclass(slots=True)
class PowerOfTwo:
    rng: random.Random

    def choose(self, sequence: Sequence, instances: Seq[Instance]) -> int:
        if len(instances) < 2:
            return 0
        return _least_loaded(self.rng.sample(range(len(instances)), 2), instances)


@dataclass(slots=True)
class PrefixAffinity:
    """Rendezvous (consistent) hashing of the prompt's first blocks: the same prefix goes to
    the same instance, and adding an instance moves only the prefixes it wins."""

    block_size: int

    def choose(self, sequence: Sequence, instances: Seq[Instance]) -> int:
        ids = sequence.prompt_token_ids or []
        key = hash(tuple(ids[: self.block_size * AFFINITY_BLOCKS]))
        return max(range(len(instances)), key=lambda k: (hash((key, k)), -k))


@dataclass(slots=True)
class PrecisePrefix:
    """The instance holding the longest cached prefix of the prompt, as a router fed by the
    instances' KV events sees it; ties go to the least loaded."""

    def choose(self, sequence: Sequence, instances: Seq[Instance]) -> int:
        scores = [instance.cached_blocks(sequence) for instance in instances]
        best = max(scores)
        return _least_loaded([k for k, s in enumerate(scores) if s == best], instances)


ROUTERS: dict[str, Callable[[random.Random, int], Router]] = {
    "round-robin": lambda rng, block: RoundRobin(),
    "random": lambda rng, block: RandomChoice(rng),
    "least-requests": lambda rng, block: LeastRequests(),
    "least-kv-usage": lambda rng, block: LeastKVUsage(),
    "power-of-two": lambda rng, block: PowerOfTwo(rng),
    "prefix-affinity": lambda rng, block: PrefixAffinity(block),
    "precise-prefix": lambda rng, block: PrecisePrefix(),
}
"""Policy name -> factory taking the router's random source and the KV block size."""
