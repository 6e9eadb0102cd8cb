"""Several simulated servers behind a router on one virtual clock.

Events are taken in time order: the next request sent (to the router, which sees every
instance as it is at that moment) or the next step of the instance furthest behind. A
finished turn of a conversation sends the next turn after its think time. Nothing is kept
per request once it finished: each outcome goes to the caller's sink.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import random
from collections.abc import Iterable, Iterator
from collections.abc import Sequence as Seq
from contextlib import contextmanager
from dataclasses import dataclass
from hashlib import blake2b

from llmsim.engine.block_hash import internal_block_hasher
from llmsim.engine.kv_transfer import kv_transfer_delay
from llmsim.engine.lora import Adapter, LoraManager
from llmsim.engine.sequence import Sequence
from llmsim.engine.step.step_engine import StepEngine
from llmsim.engine.step.virtual import VirtualRun, virtual_sequence
from llmsim.settings.model import Settings
from llmsim.simulation.driver import ClientTimes
from llmsim.simulation.routers import ROUTERS, Instance, Router
from llmsim.simulation.synthetic import WorkloadError
from llmsim.simulation.workload import Request

ID_RANGE_BITS = 24
"""A prompt's ids span at most 2**24 values above its name's hash."""
NAME_CACHE_LIMIT = 4096
"""The id bases of at most this many prompt and prefix names are kept for reuse."""
YOUNG_OBJECTS = 50_000
"""New container objects between two of the collector's youngest-generation scans in a run."""


@dataclass(frozen=True, slots=True)
class Outcome(ClientTimes):
    """One finished request, in seconds of virtual time."""

    instance: int
    prefix: str
    """The request's shared prefix (system prompt), empty without one."""
    prompt_tokens: int
    output_tokens: int
    cached_tokens: int
    sent: float
    scheduled: float
    first_token: float
    finished: float
    adapter: str | None = None
    """The LoRA adapter the request named."""

    @property
    def queue(self) -> float:
        return self.scheduled - self.sent


class Observer:
    """What a run reports as it goes; the default ignores everything."""

    def finished(self, outcome: Outcome) -> None:
        """A request finished."""

    def prefilled(self, instance: int) -> None:
        """A prefill instance finished a P/D request's prompt (its decode half follows)."""

    def token_gaps(self, instance: int, gap: float, count: int) -> None:
        """``count`` requests produced a token ``gap`` seconds after their previous one."""

    def step(self, instance: int, run: VirtualRun, duration: float) -> None:
        """An instance ended a step of ``duration`` seconds at ``run.now``."""


@dataclass(slots=True)
class _InFlight:
    index: int
    request: Request
    prefill: bool = False
    """On a prefill instance of a P/D pair: the decode half follows."""
    sent: float | None = None
    scheduled: float | None = None
    cached: int = 0


class Cluster:
    """One instance per entry of ``settings`` (replicas repeat one) behind the ``router``.

    With ``prefill`` settings (P/D disaggregation) each request is first prefilled on a
    prefill instance (one output token), then sent to a decode instance that receives the
    prompt's KV cache (the transfer time of its settings) instead of computing it; both
    pools are routed with the same policy. Prefill instances come after the decode ones.
    ``lazy=False`` visits every decoding sequence at every step (the same results, slower).
    """

    def __init__(
        self,
        settings: Seq[Settings],
        router: str,
        *,
        seed: int = 0,
        prefill: Seq[Settings] = (),
        lazy: bool = True,
    ) -> None:
        self.settings = [*settings, *prefill]
        self.instances = [
            Instance(
                f"instance-{k}",
                VirtualRun(
                    StepEngine.from_settings(
                        each,
                        block_hasher=internal_block_hasher,
                        rng=random.Random(seed * 7919 + k),
                    ),
                    lazy=lazy,
                    keep=False,
                    loras=_loras(each),
                ),
                adapters=frozenset(module.name for module in each.adapters),
            )
            for k, each in enumerate(self.settings)
        ]
        self.decode_pool = self.instances[: len(settings)]
        self.prefill_pool = self.instances[len(settings) :]
        block_size = settings[0].block_size
        self.router = ROUTERS[router](random.Random(seed), block_size)
        self.prefill_router = ROUTERS[router](random.Random(seed + 1), block_size)
        self._transfer_rng = random.Random(seed + 2)
        self._bases: dict[str, int] = {}
        self._order = itertools.count()
        self._requests: dict[Sequence, _InFlight] = {}
        self._due: list[tuple[float, int, int]] = []
        """(next event, instance, version): a heap with stale entries skipped."""
        self._versions = [0] * len(self.instances)

    def run(self, requests: Iterable[Request], observer: Observer) -> float:
        """Send ``requests`` (in the order of ``send_at``), run until all finished; return
        the time the last one ended."""
        with _rare_collections():
            return self._run(requests, observer)

    def _run(self, requests: Iterable[Request], observer: Observer) -> float:
        source: Iterator[Request] = iter(requests)
        follow_ups: list[tuple[float, int, Request]] = []
        upcoming = next(source, None)
        while True:
            arrival = upcoming.send_at if upcoming is not None else None
            if follow_ups and (arrival is None or follow_ups[0][0] < arrival):
                arrival = follow_ups[0][0]
            index, step_at = self._next_step()
            if step_at is not None and (arrival is None or step_at < arrival):
                self._step(index, observer, follow_ups)
            elif arrival is not None:
                if follow_ups and follow_ups[0][0] == arrival:
                    _, _, request = heapq.heappop(follow_ups)
                else:
                    assert upcoming is not None
                    request, upcoming = upcoming, next(source, None)
                self._route(request, arrival)
            else:
                return max(instance.run.now for instance in self.instances)

    def _next_step(self) -> tuple[int, float | None]:
        """The instance with the earliest next event (ties: the lowest index), and when."""
        due, versions = self._due, self._versions
        while due and due[0][2] != versions[due[0][1]]:
            heapq.heappop(due)  # stale: that instance changed since
        if not due:
            return 0, None
        return due[0][1], due[0][0]

    def _refresh(self, index: int) -> None:
        """An instance stepped or got a request: queue its next event anew."""
        self._versions[index] += 1
        at = self.instances[index].run.next_event()
        if at is not None:
            heapq.heappush(self._due, (at, index, self._versions[index]))

    def _route(self, request: Request, at: float) -> None:
        name = f"{request.prompt}#{next(self._order)}"
        adapter = request.adapter
        if self.prefill_pool:
            sequence = virtual_sequence(name, self._ids(request), 1, adapter=adapter)
            local = _choose(self.prefill_router, sequence, self.prefill_pool)
            self._send(sequence, _InFlight(len(self.decode_pool) + local, request, True), at)
            return
        sequence = virtual_sequence(
            name, self._ids(request), request.output_tokens, adapter=adapter
        )
        sequence.output_ids = self._output_ids(request)
        index = _choose(self.router, sequence, self.decode_pool)
        self._send(sequence, _InFlight(index, request), at)

    def _send(self, sequence: Sequence, flight: _InFlight, at: float) -> None:
        instance = self.instances[flight.index]
        instance.in_flight += 1
        self._requests[sequence] = flight
        instance.run.arrive(sequence, at=at)
        self._refresh(flight.index)

    def _decode(self, prefilled: Sequence, flight: _InFlight, at: float) -> None:
        """The decode half of a P/D request: the prompt's KV cache arrives, not computed."""
        request = flight.request
        ids = prefilled.prompt_token_ids or []
        sequence = virtual_sequence(
            f"{prefilled.request_id}/decode", ids, request.output_tokens, adapter=request.adapter
        )
        sequence.output_ids = self._output_ids(request)
        index = _choose(self.router, sequence, self.decode_pool)
        sequence.kv_transfer_delay = kv_transfer_delay(
            self.settings[index], request.prompt_tokens, self._transfer_rng
        )
        scheduled = prefilled.scheduled_at if prefilled.scheduled_at is not None else at
        cached = prefilled.cached_tokens or 0
        self._send(
            sequence, _InFlight(index, request, False, prefilled.arrival, scheduled, cached), at
        )

    def _step(
        self, index: int, observer: Observer, follow_ups: list[tuple[float, int, Request]]
    ) -> None:
        run = self.instances[index].run
        before = run.now
        run.step()
        result = run.last_result
        if result is not None:
            gaps: dict[float, int] = {}
            if result.lazy:
                gaps[result.lazy_previous] = result.lazy
            for seq in result.emitted:
                previous = seq.previous_token_at
                if previous is not None:
                    gaps[previous] = gaps.get(previous, 0) + 1
            for previous in sorted(gaps):  # an order that does not depend on the batch's
                observer.token_gaps(index, run.now - previous, gaps[previous])
            for seq in result.finished:
                self._finish(index, seq.sequence, observer, follow_ups)
        observer.step(index, run, run.now - before)
        self._refresh(index)

    def _finish(
        self,
        index: int,
        sequence: Sequence,
        observer: Observer,
        follow_ups: list[tuple[float, int, Request]],
    ) -> None:
        flight = self._requests.pop(sequence)
        request = flight.request
        self.instances[index].in_flight -= 1
        finished = sequence.last_token_at if sequence.last_token_at is not None else 0.0
        if flight.prefill:
            observer.prefilled(index)
            self._decode(sequence, flight, finished)
            return
        first = sequence.first_token_at if sequence.first_token_at is not None else finished
        scheduled = sequence.scheduled_at if sequence.scheduled_at is not None else first
        observer.finished(
            Outcome(
                index,
                request.prefix,
                request.prompt_tokens,
                request.output_tokens,
                flight.cached or sequence.cached_tokens or 0,
                flight.sent if flight.sent is not None else sequence.arrival,
                flight.scheduled if flight.scheduled is not None else scheduled,
                first,
                finished,
                request.adapter,
            )
        )
        if request.then is not None:
            at = finished + request.then.send_at
            heapq.heappush(follow_ups, (at, next(self._order), request.then))

    def _ids(self, request: Request) -> Seq[int]:
        """Token ids: the shared prefix's, then the prompt's own by position (so a later turn
        of a conversation starts with the earlier turn's prompt).

        Each name gives a 64-bit hash and its ids run up from it: distinct names share no
        block short of a hash collision, and a range costs no hashing per token (nor a list
        of ids, without a shared prefix).
        """
        shared = min(request.prefix_tokens, request.prompt_tokens)
        base = self._base(request.prompt)
        own = range(base + shared, base + request.prompt_tokens)
        if not shared:
            return own
        prefix = self._base(request.prefix)
        return [*range(prefix, prefix + shared), *own]

    def _output_ids(self, request: Request) -> range:
        """The answer's ids continue the prompt's, so the conversation's next turn, which
        starts with this prompt and answer, finds both in the prefix cache (a range: the
        ids are never copied, and hash as the list of them would)."""
        base = self._base(request.prompt) + request.prompt_tokens
        return range(base, base + request.output_tokens)

    def _base(self, name: str) -> int:
        base = self._bases.get(name)
        if base is None:
            digest = blake2b(name.encode(), digest_size=8).digest()
            base = int.from_bytes(digest, "big") << ID_RANGE_BITS
            if len(self._bases) >= NAME_CACHE_LIMIT:
                self._bases.clear()
            self._bases[name] = base
        return base


def _loras(settings: Settings) -> LoraManager | None:
    """The instance's LoRA slots and adapters, as its engine sets them up live."""
    if not settings.adapters:
        return None
    loras = LoraManager(settings.max_loras, settings.cpu_lora_capacity, settings.lora_load_latency)
    for module in settings.adapters:
        loras.register(Adapter(module.name, module.path, module.base_model_name))
    return loras


def _choose(router: Router, sequence: Sequence, pool: Seq[Instance]) -> int:
    """The router's pick in ``pool``; a request naming an adapter among those serving it."""
    adapter = sequence.adapter
    if adapter is None:
        return router.choose(sequence, pool)
    serving = [k for k, instance in enumerate(pool) if adapter in instance.adapters]
    if not serving:
        raise WorkloadError(
            f"no instance serves the LoRA adapter {adapter!r} (give instances "
            "--set lora=NAME,... or lora_modules, or a fleet file's lora)"
        )
    return serving[router.choose(sequence, [pool[k] for k in serving])]


@contextmanager
def _rare_collections() -> Iterator[None]:
    """Look for reference cycles less often while a run makes its many objects (blocks,
    sequences, records) that live on: with the default threshold the collector scanned them
    a few hundred times, a quarter of a run. Results do not depend on it."""
    thresholds = gc.get_threshold()
    gc.set_threshold(max(YOUNG_OBJECTS, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
