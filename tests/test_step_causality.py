"""The step model reports only time that passed: no step begins before the sequences in it
arrived, and every phase a metric is built from lasts at least the steps it spans."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import statistics
import time
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmsim.engine import Engine, GenerationRequest, PromptInput, Sequence, Target
from llmsim.engine.observer import FanOutObserver, NullObserver
from llmsim.engine.step import StepEngine, StepLoop
from llmsim.engine.step.costs import StepCosts
from llmsim.engine.step.virtual import VirtualRun, virtual_sequence
from llmsim.engine.tokenizer import token_ids
from llmsim.observability.metrics import Metrics
from llmsim.settings.model import Settings

if TYPE_CHECKING:
    from conftest import RunningServer

STEP = 0.005
STALL = 0.05


@pytest.fixture(autouse=True)
def _no_llmsim_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LLMSIM_"):
            monkeypatch.delenv(name)


class Recorder:
    """An engine observer keeping every TTFT and token gap the metrics are fed."""

    def __init__(self) -> None:
        self.ttfts: list[float] = []
        self.gaps: list[float] = []
        self.finished: list[Sequence] = []

    def request_submitted(self, n: int) -> None:
        return None

    def scheduler_changed(self, scheduler: Any) -> None:
        return None

    def first_token(self, sequence: Sequence, time_to_first_token: float) -> None:
        self.ttfts.append(time_to_first_token)

    def next_tokens(self, sequence: Sequence, gap: float | None, overdue: int) -> None:
        if gap is not None:
            self.gaps.append(gap)
        self.gaps.extend([0.0] * overdue)

    def zero_gap_tokens(self, count: int) -> None:
        self.gaps.extend([0.0] * count)

    def sequence_finished(self, sequence: Sequence) -> None:
        self.finished.append(sequence)


def request(name: str, max_tokens: int) -> GenerationRequest:
    ids = token_ids(f"{name} says hello")
    return GenerationRequest(
        request_id=name,
        target=Target("llmsim/sim-model", None),
        prompts=[PromptInput(len(ids), f"{name} says hello", ids)],
        n=1,
        max_tokens=max_tokens,
        ignore_eos=True,
    )


def test_a_sequence_joins_no_step_that_started_before_it_arrived() -> None:
    """Virtual time: the step scheduler keeps a sequence from a step planned before its
    arrival, whatever instant the caller plans it at."""
    engine = StepEngine(num_blocks=64, costs=StepCosts(inter_token_latency=STEP))
    early = virtual_sequence("early", 8, 3, arrival=0.0)
    late = virtual_sequence("late", 8, 3, arrival=0.012)
    engine.add(early)
    engine.add(late)
    plan, _ = engine.begin_step(0.010)  # a step that (by its plan) began before "late" existed
    assert [chunk.seq.sequence for chunk in plan.chunks] == [early]
    engine.end_step(plan, 0.015)
    plan, _ = engine.begin_step(0.015)
    assert late in [chunk.seq.sequence for chunk in plan.chunks]
    assert late.scheduled_at == 0.015


def test_a_sequence_that_reached_the_engine_after_a_step_was_due_waits_for_the_next() -> None:
    """Virtual time: a step planned late (at 0.012, due at 0.010) takes only the sequences
    that reached the engine by its due time; a later one joins the step after."""
    engine = StepEngine(num_blocks=64, costs=StepCosts(inter_token_latency=STEP))
    early, late = virtual_sequence("early", 8, 3), virtual_sequence("late", 8, 3)
    engine.add(early).entered = 0.009
    engine.add(late).entered = 0.011
    plan, _ = engine.begin_step(0.012, entered_by=0.010)
    assert [chunk.seq.sequence for chunk in plan.chunks] == [early]
    engine.end_step(plan, 0.017)
    plan, _ = engine.begin_step(0.017)
    assert late in [chunk.seq.sequence for chunk in plan.chunks]


def test_virtual_phases_are_never_negative_nor_shorter_than_a_step() -> None:
    run = VirtualRun(StepEngine(num_blocks=256, costs=StepCosts(inter_token_latency=STEP)))
    for index in range(12):
        run.arrive(virtual_sequence(f"s{index}", 20, 4), at=index * 0.0013)
    run.until_idle()
    assert len(run.finished) == 12
    for sequence in run.finished:
        assert sequence.scheduled_at is not None
        assert sequence.first_token_at is not None
        assert sequence.last_token_at is not None
        assert sequence.scheduled_at >= sequence.arrival
        assert sequence.first_token_at - sequence.scheduled_at >= STEP - 1e-9
        assert sequence.last_token_at - sequence.first_token_at >= 3 * STEP - 1e-9


class StampedSink:
    """Records, for every write, the release time the engine stamped and the clock then."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.writes: list[tuple[float, float]] = []

    def tokens(self, sequence: Sequence, start: int, texts: Any) -> bool:
        assert sequence.last_token_at is not None
        self.writes.append((sequence.last_token_at, self.clock()))
        return False


async def test_a_stalled_loop_plans_the_next_step_from_where_it_got_to() -> None:
    """The loop's clock jumps 50 ms after a step (a stall, without really blocking): the
    next step starts then, and every token is stamped with the time it was written."""
    offset = [0.0]

    def clock() -> float:
        return time.monotonic() + offset[0]

    class Stall:
        steps = 0

        def step_done(self, plan: Any, duration: float) -> None:
            self.steps += 1
            if self.steps == 3:
                offset[0] += STALL

        def decode_run_done(self, segments: list[tuple[int, int]]) -> None:
            return None

    engine = StepEngine(num_blocks=64, costs=StepCosts(inter_token_latency=STEP))
    loop = StepLoop(engine, NullObserver, clock=clock)
    loop.step_observers.append(Stall())
    sink = StampedSink(clock)
    sequence = virtual_sequence("a", 8, 8, arrival=clock())
    await loop.run(sequence, sink)
    assert sequence.first_token_at is not None
    assert sequence.last_token_at is not None
    assert sequence.last_token_at - sequence.first_token_at >= 7 * STEP + STALL - 1e-6
    assert len(sink.writes) == 8
    for stamped, written in sink.writes:
        assert 0.0 <= written - stamped < 0.010  # released when stamped, not 50 ms before


class Plans:
    """The request ids of each step's batch, in order."""

    def __init__(self) -> None:
        self.batches: list[set[str]] = []

    def step_done(self, plan: Any, duration: float) -> None:
        self.batches.append({chunk.seq.sequence.request_id for chunk in plan.chunks})

    def decode_run_done(self, segments: list[tuple[int, int]]) -> None:
        return None


async def batches_with_a_second_request(jump: float) -> list[set[str]]:
    """One sequence runs; once its first step is in flight, the clock moves on by ``jump``
    (the loop has not looked yet) and a second one reaches the engine: every step's batch."""
    offset = [0.0]

    def clock() -> float:
        return time.monotonic() + offset[0]

    engine = StepEngine(num_blocks=64, costs=StepCosts(inter_token_latency=STEP))
    loop = StepLoop(engine, NullObserver, clock=clock)
    plans = Plans()
    loop.step_observers.append(plans)
    first = virtual_sequence("first", 8, 6, arrival=clock())
    running = asyncio.ensure_future(loop.run(first, None))
    while first.scheduled_at is None:  # noqa: ASYNC110 - until its first step is planned
        await asyncio.sleep(0)
    offset[0] += jump
    await loop.run(virtual_sequence("second", 8, 2, arrival=clock()), None)
    await running
    return plans.batches


async def test_a_request_whose_handling_made_a_step_late_joins_the_step_after() -> None:
    """Real time: a request that reaches the engine after the step in flight was due (its
    handling kept the loop from its timer) does not join the late step that follows, but
    the one after, as in virtual time; one that comes before the step's end joins the next."""
    late = await batches_with_a_second_request(STEP + 0.001)
    assert late[:3] == [{"first"}, {"first"}, {"first", "second"}]
    on_time = await batches_with_a_second_request(0.0)
    assert on_time[:2] == [{"first"}, {"first", "second"}]


async def test_work_between_steps_shorter_than_a_step_is_absorbed_in_the_step() -> None:
    """The loop's own work between two steps (3 ms here, made of clock time without really
    spending it) is part of the modelled step: tokens still come one step apart."""
    offset = [0.0]

    def clock() -> float:
        return time.monotonic() + offset[0]

    class Busy:
        def step_done(self, plan: Any, duration: float) -> None:
            offset[0] += 0.003

        def decode_run_done(self, segments: list[tuple[int, int]]) -> None:
            return None

    engine = StepEngine(num_blocks=64, costs=StepCosts(inter_token_latency=STEP))
    loop = StepLoop(engine, NullObserver, clock=clock)
    loop.step_observers.append(Busy())
    sink = StampedSink(clock)
    sequence = virtual_sequence("a", 8, 10, arrival=clock())
    await loop.run(sequence, sink)
    stamps = [stamped for stamped, _ in sink.writes]
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    assert len(gaps) == 9
    assert min(gaps) >= STEP - 1e-9
    assert statistics.median(gaps) < STEP + 0.0015  # not 3 ms more per step


async def test_a_cpu_stall_and_a_burst_during_it_report_no_time_that_did_not_pass() -> None:
    """Real time: the event loop blocks for 50 ms between two steps while a burst of
    requests arrives; every interval the metrics observe stays causal."""
    settings = Settings(
        latency_model="step",
        mode="random",
        seed=3,
        max_model_len=512,
        kv_cache_size=4096,
        inter_token_latency=f"{STEP * 1000:g}ms",
        config=None,
    )
    metrics = Metrics(settings)
    recorder = Recorder()
    engine = Engine(settings, observer=FanOutObserver(metrics, recorder))
    assert engine.step is not None
    metrics.track(engine.scheduler, settings.kv_cache_size)
    metrics.track_step(engine.step, settings)

    async def one(name: str, max_tokens: int) -> Sequence:
        with engine.submit(request(name, max_tokens)) as group:
            await group.run(None)
        return group.sequences[0]

    async def stall_then_burst() -> list[asyncio.Task[Sequence]]:
        await asyncio.sleep(2.5 * STEP)  # mid-step: the loop is waiting for a step's end
        time.sleep(STALL)  # noqa: ASYNC251 - the stall under test blocks the event loop
        # requests that reached the socket during the stall are handled before the step loop
        return [asyncio.create_task(one(f"burst{k}", 4)) for k in range(8)]

    background = asyncio.create_task(one("long", 20))
    burst = await stall_then_burst()
    sequences = [await background, *await asyncio.gather(*burst)]

    queued = {s.request_id: (s.scheduled_at or 0.0) - s.arrival for s in sequences}
    assert min(queued.values()) >= 0.0, queued
    for sequence in sequences:
        assert sequence.scheduled_at is not None
        assert sequence.first_token_at is not None
        assert sequence.last_token_at is not None
        assert sequence.finished_at is not None
        assert sequence.scheduled_at >= sequence.arrival, sequence.request_id
        assert sequence.first_token_at - sequence.scheduled_at >= STEP - 1e-6
        tokens_span = sequence.last_token_at - sequence.first_token_at
        assert tokens_span >= (sequence.generated - 1) * STEP - 1e-6
        assert sequence.finished_at >= sequence.last_token_at
    assert min(recorder.ttfts) >= STEP - 1e-6
    assert len(recorder.ttfts) == 9
    assert min(recorder.gaps) >= STEP - 1e-6
    assert metrics.phase["queue"].sum >= 0.0
    assert metrics.phase["prefill"].sum >= 9 * STEP - 1e-6
    # the long request straddled the stall: the time lost is in its latency, not hidden
    long = sequences[0]
    assert long.finished_at is not None
    assert long.finished_at - long.arrival >= 19 * STEP + STALL


def _client_ttft(server: RunningServer) -> float:
    """Seconds from sending a streaming chat to reading its first content chunk."""
    body = json.dumps(
        {
            "model": "llmsim/sim-model",
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 3,
            "stream": True,
        }
    ).encode()
    request = urllib.request.Request(
        server.api_url + "/chat/completions",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    sent = time.perf_counter()
    with urllib.request.urlopen(request, timeout=10) as response:
        for line in response:
            if line.startswith(b"data: {") and b'"content":"' in line.replace(b" ", b""):
                first = time.perf_counter() - sent
                response.read()
                return first
    raise AssertionError("no content chunk")


def test_the_servers_ttft_agrees_with_what_a_client_measures(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--latency-model", "step", "--inter-token-latency", "5ms")
    clients = [_client_ttft(server) for _ in range(5)]
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    found = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("vllm:time_to_first_token_seconds_")
    }
    assert found["vllm:time_to_first_token_seconds_count"] == 5
    server_mean = found["vllm:time_to_first_token_seconds_sum"] / 5
    client_mean = sum(clients) / 5
    assert server_mean >= STEP  # no token before a step ends
    assert server_mean <= client_mean  # the server cannot see it after the client does
    assert client_mean - server_mean < 0.025  # HTTP on loopback, on a busy machine


class OrderSink:
    """Records every write in order: the request, its first position, the step's stamp."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, int, float | None]] = []

    def tokens(self, sequence: Sequence, start: int, texts: Any) -> bool:
        self.writes.append((sequence.request_id, start, sequence.last_token_at))
        return False


async def test_a_steps_first_tokens_are_written_before_the_running_streams() -> None:
    """A newcomer's first token leaves at its step's end, not after the running streams'
    writes of that step (a front end's time for those is modelled apart)."""
    engine = StepEngine(num_blocks=64, costs=StepCosts(inter_token_latency=STEP))
    loop = StepLoop(engine, NullObserver)
    sink = OrderSink()
    running = [virtual_sequence(f"d{k}", 8, 8, arrival=time.monotonic()) for k in range(3)]
    tasks = [asyncio.create_task(loop.run(sequence, sink)) for sequence in running]
    await asyncio.sleep(2.5 * STEP)
    late = virtual_sequence("late", 8, 2, arrival=time.monotonic())
    await asyncio.gather(loop.run(late, sink), *tasks)
    first = sink.writes.index(("late", 0, late.first_token_at))
    same_step = [
        k
        for k, (name, _, stamp) in enumerate(sink.writes)
        if stamp == late.first_token_at and name != "late"
    ]
    assert len(same_step) == 3
    assert min(same_step) > first
    await loop.close()
