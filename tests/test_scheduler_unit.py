"""Scheduler, LoRA slots and latency model, driven directly (no HTTP).

The scheduler tests use a hand-driven clock and a recording observer, so every
admission decision is checked exactly; the engine tests run real (short) timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from llmsim.engine import (
    Adapter,
    AdapterNotFoundError,
    ContextLengthError,
    Engine,
    GenerationRequest,
    PromptInput,
    QueueFullError,
    RequestGroup,
    Scheduler,
    Sequence,
    State,
    Target,
    UnknownModelError,
)
from llmsim.engine.lora import LoraManager, SlotView
from llmsim.engine.timing import JITTER_CLAMP, LatencyModel, LatencyProfile
from llmsim.settings.model import Settings

BASE_MODEL = "llmsim/sim-model"
POLL_TIMEOUT = 5.0
POLL_INTERVAL = 0.005


# -- helpers ------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """What one ``scheduler_changed`` event showed."""

    running: int
    waiting: int
    running_adapters: tuple[str, ...]
    waiting_adapters: tuple[str, ...]


@dataclass
class RecordingObserver:
    """An engine observer that keeps every event for later assertions."""

    submitted: list[int] = field(default_factory=list)
    changes: list[Snapshot] = field(default_factory=list)
    finished: list[tuple[str, int, str | None]] = field(default_factory=list)
    first_tokens: list[tuple[str, float]] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    def request_submitted(self, n: int) -> None:
        self.submitted.append(n)

    def scheduler_changed(self, scheduler: Scheduler) -> None:
        self.changes.append(
            Snapshot(
                scheduler.num_running,
                scheduler.num_waiting,
                tuple(scheduler.running_adapters()),
                tuple(scheduler.waiting_adapters()),
            )
        )

    def first_token(self, sequence: Sequence, time_to_first_token: float) -> None:
        self.first_tokens.append((sequence.request_id, time_to_first_token))

    def next_tokens(self, sequence: Sequence, gap: float | None, overdue: int) -> None:
        if gap is not None:
            self.gaps.append(gap)
        self.gaps.extend([0.0] * overdue)

    def zero_gap_tokens(self, count: int) -> None:
        self.gaps.extend([0.0] * count)

    def sequence_finished(self, sequence: Sequence) -> None:
        self.finished.append((sequence.request_id, sequence.index, sequence.finish_reason))

    def admission_rejected(self, reason: str) -> None:
        self.rejected.append(reason)

    def reasons(self, request_id: str) -> list[str | None]:
        return [reason for rid, _, reason in self.finished if rid == request_id]


class FakeClock:
    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class Bench:
    """A scheduler with its LoRA manager, observer and clock."""

    scheduler: Scheduler
    loras: LoraManager
    observer: RecordingObserver
    clock: FakeClock

    def request(self, request_id: str, n: int = 1, adapter: str | None = None) -> list[Sequence]:
        """Build a request of ``n`` sequences and submit it (all or nothing)."""
        sequences = make_sequences(request_id, n, adapter)
        self.scheduler.submit(sequences)
        return sequences

    def running_ids(self) -> list[str]:
        return [label(sequence) for sequence in self.scheduler.running]

    def waiting_ids(self) -> list[str]:
        return [label(sequence) for sequence in self.scheduler.waiting]


def label(sequence: Sequence) -> str:
    return f"{sequence.request_id}.{sequence.index}"


def make_sequences(request_id: str, n: int = 1, adapter: str | None = None) -> list[Sequence]:
    loop = asyncio.get_running_loop()
    return [
        Sequence(
            request_id=request_id,
            index=index,
            adapter=adapter,
            prompt_tokens=4,
            output=["a", " b", " c"],
            natural_finish="length",
            stop_reason=None,
            max_tokens=3,
            n=n,
            arrival=0.0,
            admitted=loop.create_future(),
        )
        for index in range(n)
    ]


def make_bench(
    *,
    max_running: int,
    max_waiting: int = 100,
    max_loras: int = 1,
    max_cpu_loras: int | None = None,
    load_latency: float = 0.0,
    adapters: tuple[str, ...] = (),
) -> Bench:
    loras = LoraManager(max_loras, max_cpu_loras or max_loras, load_latency)
    for name in adapters:
        loras.register(Adapter(name, f"/adapters/{name}"))
    observer = RecordingObserver()
    clock = FakeClock()
    scheduler = Scheduler(
        max_running=max_running,
        max_waiting=max_waiting,
        loras=loras,
        observer=observer,
        clock=clock,
    )
    return Bench(scheduler, loras, observer, clock)


def finish_all(bench: Bench, sequences: list[Sequence]) -> None:
    for sequence in sequences:
        bench.scheduler.finish(sequence)


@pytest.fixture(autouse=True)
def _no_llmsim_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read LLMSIM_* variables; keep the developer's environment out of it."""
    for name in list(os.environ):
        if name.startswith("LLMSIM_") or name == "VLLM_API_KEY":
            monkeypatch.delenv(name)


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "mode": "random",
        "seed": 3,
        "max_model_len": 256,
        "time_to_first_token": 0.0,
        "inter_token_latency": 0.0,
        "config": None,
    }
    values.update(overrides)
    return Settings(**values)


def generation(
    request_id: str,
    *,
    model: str | None = None,
    n: int = 1,
    prompts: int = 1,
    prompt_tokens: int = 5,
    max_tokens: int | None = 4,
) -> GenerationRequest:
    return GenerationRequest(
        request_id=request_id,
        target=Target(model or BASE_MODEL, model),
        prompts=[PromptInput(prompt_tokens, "hello there") for _ in range(prompts)],
        n=n,
        max_tokens=max_tokens,
        ignore_eos=True,
    )


async def poll(condition: Any, timeout: float = POLL_TIMEOUT) -> None:
    """Wait until ``condition()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(POLL_INTERVAL)


# -- admission ----------------------------------------------------------------------
async def test_at_most_max_running_run_and_the_rest_wait_in_fifo_order() -> None:
    bench = make_bench(max_running=2)
    requests = [bench.request(f"r{i}") for i in range(5)]

    assert bench.running_ids() == ["r0.0", "r1.0"]
    assert bench.waiting_ids() == ["r2.0", "r3.0", "r4.0"]
    for sequences in requests[:2]:
        assert sequences[0].state is State.RUNNING
        assert sequences[0].admitted.done()
        assert sequences[0].scheduled_at == bench.clock.now
    for sequences in requests[2:]:
        assert sequences[0].state is State.WAITING
        assert not sequences[0].admitted.done()
        assert sequences[0].scheduled_at is None
    assert bench.observer.changes[-1] == Snapshot(2, 3, (), ())


async def test_a_finished_sequence_admits_the_next_waiting_one() -> None:
    bench = make_bench(max_running=2)
    requests = [bench.request(f"r{i}") for i in range(4)]
    bench.clock.now = 105.0

    bench.scheduler.finish(requests[1][0])

    assert requests[1][0].state is State.FINISHED
    assert requests[1][0].finish_reason == "length"
    assert requests[1][0].finished_at == 105.0
    assert bench.observer.finished == [("r1", 0, "length")]
    assert bench.running_ids() == ["r0.0", "r2.0"]
    assert bench.waiting_ids() == ["r3.0"]
    assert requests[2][0].admitted.done()
    assert requests[2][0].scheduled_at == 105.0

    bench.scheduler.finish(requests[0][0])
    bench.scheduler.finish(requests[2][0])
    assert bench.running_ids() == ["r3.0"]
    assert bench.waiting_ids() == []
    bench.scheduler.finish(requests[3][0])
    assert (bench.scheduler.num_running, bench.scheduler.num_waiting) == (0, 0)
    assert bench.observer.changes[-1] == Snapshot(0, 0, (), ())


async def test_finishing_a_waiting_sequence_is_a_no_op() -> None:
    bench = make_bench(max_running=1)
    bench.request("r0")
    [waiting] = bench.request("r1")

    bench.scheduler.finish(waiting)

    assert waiting.state is State.WAITING
    assert bench.waiting_ids() == ["r1.0"]
    assert bench.observer.finished == []


async def test_engine_counts_one_slot_per_sequence_for_n_and_for_several_prompts() -> None:
    observer = RecordingObserver()
    engine = Engine(make_settings(max_running_requests=4), observer)

    choices = engine.submit(generation("n3", n=3))
    assert len(choices.sequences) == 3
    assert engine.scheduler.num_running == 3
    assert engine.scheduler.num_waiting == 0

    prompts = engine.submit(generation("p2", prompts=2))
    assert len(prompts.sequences) == 2
    assert engine.scheduler.num_running == 4
    assert engine.scheduler.num_waiting == 1
    assert [s.state for s in prompts.sequences] == [State.RUNNING, State.WAITING]
    assert observer.submitted == [3, 1]

    choices.abort()
    prompts.abort()
    assert (engine.scheduler.num_running, engine.scheduler.num_waiting) == (0, 0)


async def test_queue_overflow_raises_and_leaves_the_state_untouched() -> None:
    bench = make_bench(max_running=1, max_waiting=2)
    bench.request("r0")
    bench.request("r1")
    events_before = len(bench.observer.changes)

    rejected = make_sequences("big", n=2)
    with pytest.raises(QueueFullError):
        bench.scheduler.submit(rejected)

    assert bench.running_ids() == ["r0.0"]
    assert bench.waiting_ids() == ["r1.0"]
    assert all(s.state is State.WAITING and not s.admitted.done() for s in rejected)
    assert len(bench.observer.changes) == events_before
    assert bench.observer.finished == []

    bench.request("r2")  # one more sequence still fits
    assert bench.waiting_ids() == ["r1.0", "r2.0"]
    with pytest.raises(QueueFullError):
        bench.request("r3")
    assert bench.waiting_ids() == ["r1.0", "r2.0"]


async def test_a_request_is_rejected_whole_even_when_part_of_it_could_start() -> None:
    bench = make_bench(max_running=2, max_waiting=1)

    with pytest.raises(QueueFullError):
        bench.request("n4", n=4)  # two would run, two would wait: one too many
    assert (bench.scheduler.num_running, bench.scheduler.num_waiting) == (0, 0)
    assert bench.observer.changes == []

    bench.request("n3", n=3)
    assert bench.running_ids() == ["n3.0", "n3.1"]
    assert bench.waiting_ids() == ["n3.2"]


async def test_engine_rejects_whole_requests_when_the_queue_is_full() -> None:
    observer = RecordingObserver()
    engine = Engine(make_settings(max_running_requests=2, max_waiting_queue_length=0), observer)

    with pytest.raises(QueueFullError):
        engine.submit(generation("n3", n=3))
    assert (engine.scheduler.num_running, engine.scheduler.num_waiting) == (0, 0)
    assert observer.submitted == []

    group = engine.submit(generation("n2", n=2))
    assert engine.scheduler.num_running == 2
    group.abort()


async def test_max_waiting_zero_rejects_whenever_all_slots_are_busy() -> None:
    bench = make_bench(max_running=2, max_waiting=0)
    [first] = bench.request("r0")
    bench.request("r1")

    with pytest.raises(QueueFullError):
        bench.request("r2")
    assert bench.waiting_ids() == []

    bench.scheduler.finish(first)
    bench.request("r3")  # a slot is free again: runs at once
    assert bench.running_ids() == ["r1.0", "r3.0"]
    with pytest.raises(QueueFullError):
        bench.request("r4")


# -- LoRA slots ---------------------------------------------------------------------
async def test_sequences_of_the_same_adapter_share_one_slot() -> None:
    bench = make_bench(max_running=8, max_loras=1, adapters=("a", "b"))
    bench.request("a1", adapter="a")
    bench.request("a2", n=2, adapter="a")

    assert bench.running_ids() == ["a1.0", "a2.0", "a2.1"]
    assert bench.loras.slots() == [SlotView("a", 3)]
    assert bench.observer.changes[-1] == Snapshot(3, 0, ("a",), ())


async def test_blocked_adapter_waits_and_runnable_requests_overtake_it() -> None:
    bench = make_bench(max_running=8, max_loras=1, adapters=("a", "b"))
    first_a = bench.request("a1", adapter="a")

    blocked = bench.request("b1", adapter="b")
    assert bench.waiting_ids() == ["b1.0"]
    assert bench.observer.changes[-1] == Snapshot(1, 1, ("a",), ("b",))

    base = bench.request("base")
    assert base[0].state is State.RUNNING
    second_a = bench.request("a2", adapter="a")  # adapter already in the slot
    assert second_a[0].state is State.RUNNING
    assert bench.waiting_ids() == ["b1.0"]
    assert bench.observer.changes[-1] == Snapshot(3, 1, ("a",), ("b",))

    finish_all(bench, first_a)
    assert blocked[0].state is State.WAITING  # a still has a running sequence
    finish_all(bench, second_a)

    assert blocked[0].state is State.RUNNING
    assert blocked[0].admitted.done()
    assert bench.loras.slots() == [SlotView("b", 1)]
    assert bench.observer.changes[-1] == Snapshot(2, 0, ("b",), ())


async def test_skipped_adapter_requests_keep_their_order_in_the_queue() -> None:
    bench = make_bench(max_running=8, max_loras=1, adapters=("a", "b", "c"))
    holder = bench.request("a1", adapter="a")
    bench.request("b1", adapter="b")
    bench.request("c1", adapter="c")
    bench.request("b2", adapter="b")
    assert bench.waiting_ids() == ["b1.0", "c1.0", "b2.0"]

    finish_all(bench, holder)

    # b takes the idle slot and both its requests run; c keeps waiting.
    assert bench.running_ids() == ["b1.0", "b2.0"]
    assert bench.waiting_ids() == ["c1.0"]
    assert bench.observer.changes[-1] == Snapshot(2, 1, ("b",), ("c",))


async def test_waiting_adapter_request_respects_fifo_when_the_running_set_is_full() -> None:
    bench = make_bench(max_running=1, max_loras=1, adapters=("a", "b"))
    holder = bench.request("a1", adapter="a")
    bench.request("b1", adapter="b")
    bench.request("base")

    finish_all(bench, holder)

    assert bench.running_ids() == ["b1.0"]
    assert bench.waiting_ids() == ["base.0"]


async def test_idle_adapter_keeps_its_slot_until_another_adapter_needs_it() -> None:
    bench = make_bench(max_running=4, max_loras=1, load_latency=0.5, adapters=("a", "b"))
    first = bench.request("a1", adapter="a")
    finish_all(bench, first)

    assert bench.loras.slots() == [SlotView("a", 0)]
    assert bench.scheduler.running_adapters() == []

    bench.clock.now = 110.0
    again = bench.request("a2", adapter="a")
    assert again[0].ready_at == 110.0  # still in its slot: no new load
    assert bench.loras.slots() == [SlotView("a", 1)]
    finish_all(bench, again)

    bench.request("b1", adapter="b")
    assert bench.loras.slots() == [SlotView("b", 1)]


async def test_with_two_slots_an_idle_adapter_is_not_evicted_for_nothing() -> None:
    bench = make_bench(max_running=4, max_loras=2, adapters=("a", "b", "c"))
    finish_all(bench, bench.request("a1", adapter="a"))
    bench.request("b1", adapter="b")

    assert bench.loras.slots() == [SlotView("a", 0), SlotView("b", 1)]

    bench.request("c1", adapter="c")
    assert bench.loras.slots() == [SlotView("b", 1), SlotView("c", 1)]
    blocked = bench.request("a2", adapter="a")
    assert blocked[0].state is State.WAITING


async def test_cpu_cache_is_lru_and_only_cold_adapters_pay_the_load_latency() -> None:
    loras = LoraManager(max_loras=1, max_cpu_loras=2, load_latency=0.5)
    for name in ("a", "b", "c"):
        loras.register(Adapter(name, f"/p/{name}"))
    assert loras.warm_adapters() == ["b", "c"]  # a was least recently used

    assert loras.acquire("a", now=10.0) == pytest.approx(10.5)  # cold
    assert loras.acquire("a", now=10.2) == pytest.approx(10.5)  # shares the loading slot
    assert loras.warm_adapters() == ["c", "a"]
    loras.release("a")
    loras.release("a")

    assert loras.acquire("c", now=20.0) == 20.0  # warm: no latency
    assert loras.warm_adapters() == ["a", "c"]
    loras.release("c")

    assert loras.acquire("b", now=30.0) == pytest.approx(30.5)  # evicted earlier: cold
    assert loras.warm_adapters() == ["c", "b"]
    loras.release("b")
    assert loras.acquire("a", now=40.0) == pytest.approx(40.5)  # a fell out in turn
    assert loras.slots() == [SlotView("a", 1)]


async def test_a_shared_slot_is_ready_when_its_load_is_done_and_never_earlier() -> None:
    bench = make_bench(max_running=4, max_loras=1, load_latency=0.5, adapters=("a", "b"))
    cold = bench.request("a1", adapter="a")
    assert cold[0].ready_at == pytest.approx(100.5)

    bench.clock.now = 100.2
    joining = bench.request("a2", adapter="a")
    assert joining[0].ready_at == pytest.approx(100.5)  # waits for the same load

    bench.clock.now = 130.0
    late = bench.request("a3", adapter="a")
    assert late[0].ready_at == 130.0  # a sequence is never ready before it is admitted


async def test_scheduler_passes_the_load_latency_to_the_sequence() -> None:
    bench = make_bench(
        max_running=4, max_loras=1, max_cpu_loras=1, load_latency=0.25, adapters=("a", "b")
    )
    assert bench.loras.warm_adapters() == ["b"]

    warm = bench.request("b1", adapter="b")
    assert warm[0].ready_at == bench.clock.now
    finish_all(bench, warm)

    bench.clock.now = 200.0
    cold = bench.request("a1", adapter="a", n=2)
    assert [s.scheduled_at for s in cold] == [200.0, 200.0]
    assert [s.ready_at for s in cold] == [pytest.approx(200.25)] * 2


async def test_unregister_while_running_keeps_the_slot_until_release() -> None:
    bench = make_bench(max_running=4, max_loras=1, adapters=("a", "b"))
    running = bench.request("a1", adapter="a")
    blocked = bench.request("b1", adapter="b")

    bench.loras.unregister("a")

    assert not bench.loras.is_registered("a")
    assert bench.loras.slots() == [SlotView("a", 1)]
    assert running[0].state is State.RUNNING
    assert blocked[0].state is State.WAITING

    finish_all(bench, running)

    assert bench.loras.slots() == [SlotView("b", 1)]
    assert blocked[0].state is State.RUNNING
    assert "a" not in bench.loras.warm_adapters()
    with pytest.raises(AdapterNotFoundError):
        bench.loras.unregister("a")


async def test_unregister_of_an_idle_adapter_frees_its_slot_at_once() -> None:
    loras = LoraManager(max_loras=1, max_cpu_loras=1, load_latency=0.0)
    loras.register(Adapter("a", "/p/a"))
    loras.acquire("a", now=0.0)
    loras.release("a")
    assert loras.slots() == [SlotView("a", 0)]

    loras.unregister("a")

    assert loras.slots() == []
    assert loras.warm_adapters() == []


# -- abort --------------------------------------------------------------------------
async def test_abort_of_waiting_and_running_sequences_is_idempotent() -> None:
    bench = make_bench(max_running=1)
    [first] = bench.request("r0")
    [second] = bench.request("r1")
    [third] = bench.request("r2")

    bench.scheduler.abort(second)
    bench.scheduler.abort(second)
    assert second.state is State.FINISHED
    assert second.finish_reason == "abort"
    assert second.admitted.cancelled()
    assert bench.running_ids() == ["r0.0"]
    assert bench.waiting_ids() == ["r2.0"]

    bench.scheduler.abort(first)
    bench.scheduler.abort(first)
    assert first.finish_reason == "abort"
    assert bench.running_ids() == ["r2.0"]  # the queue advanced
    assert third.admitted.done()

    bench.scheduler.finish(third)
    bench.scheduler.abort(third)  # too late: stays a normal finish
    assert third.finish_reason == "length"

    assert bench.observer.finished == [("r1", 0, "abort"), ("r0", 0, "abort"), ("r2", 0, "length")]
    assert bench.observer.changes[-1] == Snapshot(0, 0, (), ())


async def test_abort_of_a_running_adapter_sequence_frees_its_slot() -> None:
    bench = make_bench(max_running=4, max_loras=1, adapters=("a", "b"))
    [holder] = bench.request("a1", adapter="a")
    [blocked] = bench.request("b1", adapter="b")
    [queued_b] = bench.request("b2", adapter="b")

    bench.scheduler.abort(queued_b)
    assert bench.observer.changes[-1] == Snapshot(1, 1, ("a",), ("b",))

    bench.scheduler.abort(holder)

    assert blocked.state is State.RUNNING
    assert bench.loras.slots() == [SlotView("b", 1)]
    assert bench.observer.reasons("a1") == ["abort"]
    assert bench.observer.reasons("b2") == ["abort"]
    assert bench.observer.changes[-1] == Snapshot(1, 0, ("b",), ())


async def test_group_abort_releases_every_sequence_of_a_request() -> None:
    observer = RecordingObserver()
    engine = Engine(make_settings(max_running_requests=2), observer)
    group = engine.submit(generation("n4", n=4))
    assert (engine.scheduler.num_running, engine.scheduler.num_waiting) == (2, 2)

    with group:
        pass

    assert (engine.scheduler.num_running, engine.scheduler.num_waiting) == (0, 0)
    assert observer.reasons("n4") == ["abort"] * 4
    group.abort()
    assert len(observer.finished) == 4


# -- latency model ------------------------------------------------------------------
def test_load_factor_is_linear_from_one_to_the_peak() -> None:
    model = LatencyModel(LatencyProfile(time_factor_under_load=3.0), random.Random(0))

    assert model.load_factor(0, 5) == 1.0
    assert model.load_factor(1, 5) == 1.0
    assert model.load_factor(2, 5) == pytest.approx(1.5)
    assert model.load_factor(3, 5) == pytest.approx(2.0)
    assert model.load_factor(5, 5) == pytest.approx(3.0)
    assert model.load_factor(7, 5) == pytest.approx(3.0)
    assert model.load_factor(1, 1) == 1.0


def test_delays_scale_with_the_load_factor() -> None:
    profile = LatencyProfile(time_to_first_token=0.2, inter_token_latency=0.05)
    model = LatencyModel(profile, random.Random(0))

    assert model.first_token_delay(0, 1.0) == pytest.approx(0.2)
    assert model.first_token_delay(0, 2.5) == pytest.approx(0.5)
    assert model.inter_token_delay(3.0) == pytest.approx(0.15)


def test_jitter_stays_within_seventy_percent_of_the_mean() -> None:
    mean = 0.1
    low, high = mean * (1 - JITTER_CLAMP), mean * (1 + JITTER_CLAMP)
    allowed = LatencyModel(
        LatencyProfile(inter_token_latency=mean, inter_token_latency_std_dev=0.3 * mean),
        random.Random(11),
    )
    samples = [allowed.inter_token_delay(1.0) for _ in range(5000)]
    assert all(low <= s <= high for s in samples)
    assert statistics.fmean(samples) == pytest.approx(mean, rel=0.05)
    assert statistics.pstdev(samples) == pytest.approx(0.3 * mean, rel=0.15)

    # A wider spread than the settings allow shows the clamp itself.
    wide = LatencyModel(
        LatencyProfile(time_to_first_token=mean, time_to_first_token_std_dev=mean),
        random.Random(12),
    )
    wide_samples = [wide.first_token_delay(0, 1.0) for _ in range(2000)]
    assert min(wide_samples) == pytest.approx(low)
    assert max(wide_samples) == pytest.approx(high)
    assert all(low <= s <= high for s in wide_samples)


def test_settings_refuse_a_std_dev_above_thirty_percent() -> None:
    with pytest.raises(ValidationError):
        make_settings(inter_token_latency="100ms", inter_token_latency_std_dev="40ms")
    settings = make_settings(inter_token_latency="100ms", inter_token_latency_std_dev="30ms")
    assert settings.inter_token_latency_std_dev == pytest.approx(0.03)


async def test_engine_load_factor_follows_the_settings() -> None:
    engine = Engine(make_settings(max_running_requests=5, time_factor_under_load=3.0))

    assert engine.latency.load_factor(1, 5) == 1.0
    assert engine.latency.load_factor(3, 5) == pytest.approx(2.0)
    assert engine.latency.load_factor(5, 5) == pytest.approx(3.0)


# -- engine -------------------------------------------------------------------------
async def test_engine_rejects_context_overflow_and_unknown_models() -> None:
    engine = Engine(make_settings(max_model_len=100, lora=["a"]))

    with pytest.raises(ContextLengthError) as prompt_too_long:
        engine.submit(generation("long", prompt_tokens=100, max_tokens=None))
    assert prompt_too_long.value.prompt_tokens == 100
    assert prompt_too_long.value.max_model_len == 100
    with pytest.raises(ContextLengthError) as output_too_long:
        engine.submit(generation("wide", prompt_tokens=50, max_tokens=51))
    assert output_too_long.value.max_tokens == 51
    with pytest.raises(ContextLengthError):
        engine.submit(generation("multi", prompts=2, prompt_tokens=99, max_tokens=2))
    assert (engine.scheduler.num_running, engine.scheduler.num_waiting) == (0, 0)

    fits = engine.submit(generation("fits", prompt_tokens=50, max_tokens=50))
    assert len(fits.sequences[0].output) == 50
    fits.abort()

    with pytest.raises(UnknownModelError) as unknown:
        engine.resolve("no-such-model")
    assert unknown.value.name == "no-such-model"
    assert engine.resolve(None) == Target(BASE_MODEL, None)
    assert engine.resolve(BASE_MODEL) == Target(BASE_MODEL, None)
    assert engine.resolve("a") == Target("a", "a")
    engine.loras.unregister("a")
    with pytest.raises(UnknownModelError):
        engine.resolve("a")


async def test_engine_runs_waves_and_queue_time_counts_in_ttft() -> None:
    observer = RecordingObserver()
    engine = Engine(make_settings(max_running_requests=2, inter_token_latency="30ms"), observer)
    groups = [engine.submit(generation(f"r{i}", max_tokens=4)) for i in range(4)]
    assert (engine.scheduler.num_running, engine.scheduler.num_waiting) == (2, 2)

    async def run(group: RequestGroup) -> None:
        with group:
            await group.run()

    await asyncio.wait_for(asyncio.gather(*(run(g) for g in groups)), timeout=10)

    first_wave = [g.sequences[0] for g in groups[:2]]
    second_wave = [g.sequences[0] for g in groups[2:]]
    assert all(
        s.finish_reason == "length" and s.generated == 4 for g in groups for s in g.sequences
    )
    earliest_finish = min(s.finished_at or 0.0 for s in first_wave)
    assert all((s.scheduled_at or 0.0) >= earliest_finish for s in second_wave)
    ttft = dict(observer.first_tokens)
    # Each second-wave request waited for a whole first-wave request (about 90 ms).
    assert min(ttft["r2"], ttft["r3"]) >= 0.07
    assert max(ttft["r0"], ttft["r1"]) < min(ttft["r2"], ttft["r3"])
    assert len(observer.gaps) == 4 * 3
    assert (engine.scheduler.num_running, engine.scheduler.num_waiting) == (0, 0)


async def test_engine_delays_the_first_token_of_a_cold_adapter() -> None:
    engine = Engine(
        make_settings(lora=["a", "b"], max_loras=1, max_cpu_loras=1, lora_load_latency="150ms")
    )
    assert engine.loras.warm_adapters() == ["b"]

    warm = engine.submit(generation("b1", model="b", max_tokens=1))
    with warm:
        await asyncio.wait_for(warm.run(), timeout=5)
    [warm_sequence] = warm.sequences
    assert warm_sequence.ready_at == warm_sequence.scheduled_at

    cold = engine.submit(generation("a1", model="a", max_tokens=1))
    with cold:
        await asyncio.wait_for(cold.run(), timeout=5)
    [cold_sequence] = cold.sequences
    assert cold_sequence.ready_at is not None
    assert cold_sequence.scheduled_at is not None
    assert cold_sequence.first_token_at is not None
    assert cold_sequence.ready_at - cold_sequence.scheduled_at == pytest.approx(0.15)
    assert cold_sequence.first_token_at >= cold_sequence.ready_at


async def test_tokens_keep_their_pace_on_an_adapter_loaded_long_before() -> None:
    engine = Engine(
        make_settings(
            lora=["a", "b"],
            max_loras=1,
            max_cpu_loras=1,
            lora_load_latency="20ms",
            inter_token_latency="40ms",
        )
    )
    first = engine.submit(generation("a1", model="a", max_tokens=1))
    with first:
        await asyncio.wait_for(first.run(), timeout=5)
    await asyncio.sleep(0.4)  # the adapter stays in its (idle) slot meanwhile

    later = engine.submit(generation("a2", model="a", max_tokens=6))
    started = time.monotonic()
    with later:
        await asyncio.wait_for(later.run(), timeout=5)
    elapsed = time.monotonic() - started

    [sequence] = later.sequences
    assert sequence.first_token_at is not None
    assert sequence.scheduled_at is not None
    assert sequence.first_token_at >= sequence.scheduled_at
    assert elapsed >= 5 * 0.04 * 0.9  # five gaps of 40 ms, not a burst


@dataclass
class ListSink:
    received: list[tuple[str, int, str]] = field(default_factory=list)
    done: list[str] = field(default_factory=list)

    def tokens(self, sequence: Sequence, start: int, texts: Seq[str]) -> bool:
        for position, text in enumerate(texts, start):
            self.received.append((sequence.request_id, position, text))
        return False

    def finished(self, sequence: Sequence) -> None:
        self.done.append(sequence.request_id)

    async def drain(self) -> None:
        raise AssertionError("this sink never backs up")


async def test_sink_receives_every_token_then_the_finish() -> None:
    engine = Engine(make_settings(max_running_requests=1, inter_token_latency="5ms"))
    group = engine.submit(generation("r0", max_tokens=5))
    sink = ListSink()

    with group:
        await asyncio.wait_for(group.run(sink), timeout=5)

    [sequence] = group.sequences
    assert [position for _, position, _ in sink.received] == [0, 1, 2, 3, 4]
    assert "".join(text for _, _, text in sink.received) == sequence.text
    assert sink.done == ["r0"]
    assert group.completion_tokens == 5


async def test_running_an_aborted_group_releases_no_tokens() -> None:
    observer = RecordingObserver()
    engine = Engine(make_settings(max_running_requests=1), observer)
    running = engine.submit(generation("running", max_tokens=3))
    waiting = engine.submit(generation("waiting", max_tokens=3))
    running.abort()
    waiting.abort()
    sink = ListSink()

    for group in (running, waiting):
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(group.run(sink), timeout=5)

    assert sink.received == []
    assert [s.generated for s in (*running.sequences, *waiting.sequences)] == [0, 0]
    assert observer.first_tokens == []
    assert observer.reasons("running") == ["abort"]
    assert observer.reasons("waiting") == ["abort"]


async def test_cancelled_run_leaves_nothing_running_or_waiting() -> None:
    observer = RecordingObserver()
    engine = Engine(make_settings(max_running_requests=1, inter_token_latency="50ms"), observer)
    running = engine.submit(generation("long", max_tokens=100))
    waiting = engine.submit(generation("multi", n=2, max_tokens=100))
    tasks = [asyncio.ensure_future(running.run()), asyncio.ensure_future(waiting.run())]

    await poll(lambda: running.sequences[0].generated >= 2)
    assert (engine.scheduler.num_running, engine.scheduler.num_waiting) == (1, 2)

    for task in tasks:
        task.cancel()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)

    assert all(isinstance(result, asyncio.CancelledError) for result in results)
    assert (engine.scheduler.num_running, engine.scheduler.num_waiting) == (0, 0)
    assert observer.reasons("long") == ["abort"]
    assert sorted(observer.reasons("multi"), key=str) == ["abort", "abort"]
    assert observer.changes[-1] == Snapshot(0, 0, (), ())


async def test_cancelled_handler_inside_the_group_block_frees_an_adapter_slot() -> None:
    engine = Engine(
        make_settings(max_running_requests=4, lora=["a", "b"], inter_token_latency="50ms")
    )
    holder = engine.submit(generation("a1", model="a", max_tokens=100))
    blocked = engine.submit(generation("b1", model="b", max_tokens=2))

    async def handler(group: RequestGroup) -> None:
        with group:
            await group.run()

    holder_task = asyncio.ensure_future(handler(holder))
    blocked_task = asyncio.ensure_future(handler(blocked))
    await poll(lambda: holder.sequences[0].generated >= 1)
    assert engine.scheduler.waiting_adapters() == ["b"]

    holder_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await holder_task
    await asyncio.wait_for(blocked_task, timeout=5)

    assert holder.sequences[0].finish_reason == "abort"
    assert blocked.sequences[0].finish_reason == "length"
    assert (engine.scheduler.num_running, engine.scheduler.num_waiting) == (0, 0)
    assert engine.scheduler.running_adapters() == []
