"""Drive a workload through one step engine in virtual time: arrivals in, records out.

One :class:`Simulation` is one server: its prefix cache and its clock carry over from one
workload to the next, so runs replayed one after another find what the earlier ones cached,
as they did on the server that was measured.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable
from dataclasses import dataclass

from llmsim.engine.block_hash import internal_block_hasher, output_token_id
from llmsim.engine.sequence import Sequence
from llmsim.engine.step.step_engine import StepEngine
from llmsim.engine.step.virtual import VirtualRun, virtual_sequence
from llmsim.settings.model import Settings
from llmsim.simulation.workload import Request


class ClientTimes:
    """The latencies a client computes from a request's times (a mixin for records)."""

    __slots__ = ()
    output_tokens: int
    sent: float
    first_token: float
    finished: float

    @property
    def ttft(self) -> float:
        return self.first_token - self.sent

    @property
    def e2e(self) -> float:
        return self.finished - self.sent

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first; None for a single-token answer."""
        if self.output_tokens < 2:
            return None
        return (self.finished - self.first_token) / (self.output_tokens - 1)


@dataclass(frozen=True, slots=True)
class RequestRecord(ClientTimes):
    """What a client saw of one request, in seconds of virtual time."""

    prompt_tokens: int
    output_tokens: int
    sent: float
    first_token: float
    finished: float


class Simulation:
    """One simulated server, run in virtual time."""

    def __init__(self, settings: Settings, *, seed: int = 0, lazy: bool = True) -> None:
        engine = StepEngine.from_settings(
            settings, block_hasher=internal_block_hasher, rng=random.Random(seed)
        )
        self.run_state = VirtualRun(engine, lazy=lazy)
        self._prompt_ids: dict[tuple[str, int], list[int]] = {}
        self._names = itertools.count()

    @property
    def now(self) -> float:
        return self.run_state.now

    def run(self, requests: Iterable[Request], *, warm_up: bool = False) -> list[RequestRecord]:
        """Send ``requests`` from now on (their ``send_at`` is relative) and run until idle.

        ``warm_up`` first sends the first request alone and waits for it, as vLLM's serving
        benchmark does before its timed run.
        """
        requests = list(requests)
        if warm_up and requests:
            self._run_batch([Request(requests[0].prompt, requests[0].prompt_tokens, 1)])
        return self._run_batch(requests)

    def _run_batch(self, requests: list[Request]) -> list[RequestRecord]:
        start = self.run_state.now
        sent = []
        for request in requests:
            sequence = self._sequence(request)
            self.run_state.arrive(sequence, at=start + request.send_at)
            sent.append((request, sequence))
        self.run_state.until_idle()
        return [self._record(request, sequence) for request, sequence in sent]

    def _sequence(self, request: Request) -> Sequence:
        key = (request.prompt, request.prompt_tokens)
        ids = self._prompt_ids.get(key)
        if ids is None:
            ids = [output_token_id(f"{request.prompt}:{k}") for k in range(request.prompt_tokens)]
            self._prompt_ids[key] = ids
        name = f"{request.prompt}#{next(self._names)}"
        return virtual_sequence(name, ids, request.output_tokens)

    @staticmethod
    def _record(request: Request, sequence: Sequence) -> RequestRecord:
        assert sequence.first_token_at is not None
        assert sequence.last_token_at is not None
        return RequestRecord(
            prompt_tokens=request.prompt_tokens,
            output_tokens=request.output_tokens,
            sent=sequence.arrival,
            first_token=sequence.first_token_at,
            finished=sequence.last_token_at,
        )
