"""Sleep mode's pause inside the engine (vLLM's ``pause_scheduler`` modes), no HTTP.

The scheduler tests use a hand-driven clock; the engine tests run short real timers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from typing import Any

import pytest
from test_scheduler_unit import finish_all, make_bench
from test_step_loop import Collect
from test_step_loop import request as make_request

from llmsim.engine import Engine, QueueFullError, State
from llmsim.engine.engine import Target
from llmsim.engine.pacer import Outcome, Pacer, Pacing
from llmsim.engine.timing import TimingOverride
from llmsim.observability.metrics import Metrics
from llmsim.settings.model import Settings

MODELS = ["constant", "step"]
PROMPT = "hello there " * 20


@pytest.fixture(autouse=True)
def _no_llmsim_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LLMSIM_"):
            monkeypatch.delenv(name)


def settings(latency_model: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "latency_model": latency_model,
        "mode": "random",
        "seed": 3,
        "max_model_len": 512,
        "kv_cache_size": 4096,
        "time_to_first_token": 0.0,
        "inter_token_latency": "20ms",
        "config": None,
    }
    values.update(overrides)
    return Settings(**values)


async def until(condition: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


# -- the scheduler --------------------------------------------------------------------
async def test_a_paused_scheduler_starts_only_what_the_pause_lets_through() -> None:
    bench = make_bench(max_running=1)
    running = bench.request("a")
    queued = bench.request("b")
    bench.scheduler.pause(bench.scheduler.waiting)  # ``wait``: the queued ones may still run
    bench.request("c")
    assert bench.scheduler.num_admissible == 1
    finish_all(bench, running)
    assert bench.running_ids() == ["b.0"]
    assert bench.waiting_ids() == ["c.0"]
    finish_all(bench, queued)
    assert bench.running_ids() == []  # c arrived after the pause: it waits for resume
    assert bench.scheduler.num_admissible == 0
    bench.scheduler.resume()
    assert bench.running_ids() == ["c.0"]


async def test_while_paused_every_new_sequence_counts_against_the_queue() -> None:
    bench = make_bench(max_running=4, max_waiting=2)
    bench.scheduler.pause()
    bench.request("a", n=2)
    assert bench.running_ids() == []
    with pytest.raises(QueueFullError):
        bench.request("b")  # free slots do not help while paused
    assert bench.waiting_ids() == ["a.0", "a.1"]


async def test_aborting_the_queue_resolves_admission_instead_of_cancelling_it() -> None:
    bench = make_bench(max_running=1)
    bench.request("a")
    waiting = bench.request("b", n=2)
    bench.scheduler.pause()
    assert bench.scheduler.abort_waiting() == waiting
    for sequence in waiting:
        assert sequence.state is State.FINISHED
        assert sequence.finish_reason == "abort" == sequence.api_finish_reason
        assert sequence.admitted.done()
        assert not sequence.admitted.cancelled()
        assert sequence.output == []
    assert bench.observer.reasons("b") == ["abort", "abort"]
    assert bench.running_ids() == ["a.0"]


# -- the pacer --------------------------------------------------------------------------
async def test_the_pacer_shifts_its_schedule_by_a_pause_and_ends_cut_sequences_at_once() -> None:
    engine = Engine(settings("constant"))
    pacer = Pacer(lambda: engine.observer, lambda: (1, 1))
    with engine.submit(make_request("a", PROMPT, max_tokens=10)) as group:
        sequence = group.sequences[0]
        sink = Collect()
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + 0.05
        pacing = Pacing(sequence, sink, engine.latency, deadline, loop.create_future())
        pacer.pause()
        pacer.pace(pacing)
        await asyncio.sleep(0.1)
        assert sink.seen == []  # due, but paused
        pacer.resume()
        assert pacing.deadline >= time.monotonic() + 0.03  # moved by the 0.1 s paused
        await until(lambda: len(sink.seen) >= 2)
        sequence.cut()
        pacer.expedite()
        assert pacing.done.done()
        assert pacing.done.result() is Outcome.DONE
        assert len(pacer) == 0
        assert sequence.output == [text for _, _, text in sink.seen]


# -- the engine -------------------------------------------------------------------------
@pytest.mark.parametrize("latency_model", MODELS)
async def test_abort_ends_running_and_waiting_sequences_with_what_they_have(
    latency_model: str,
) -> None:
    metrics = Metrics(settings(latency_model))
    engine = Engine(settings(latency_model, max_running_requests=1), observer=metrics)
    sinks = {"a": Collect(), "b": Collect()}
    a = engine.submit(make_request("a", PROMPT, max_tokens=50))
    b = engine.submit(make_request("b", PROMPT, max_tokens=50))
    with a, b:
        tasks = [asyncio.ensure_future(g.run(sinks[g.request.request_id])) for g in (a, b)]
        await until(lambda: len(sinks["a"].seen) >= 3)
        await engine.pause("abort")
        assert all(task.done() for task in tasks)  # the pause returns once they have left
        await asyncio.gather(*tasks)
    first, second = a.sequences[0], b.sequences[0]
    assert first.finish_reason == "abort" == first.api_finish_reason
    assert 3 <= first.generated == len(first.output) < 50
    assert first.output == sinks["a"].tokens_of(0)
    assert sinks["a"].done == [0]
    assert (second.finish_reason, second.output, sinks["b"].seen) == ("abort", [], [])
    assert sinks["b"].done == [0]  # told, so a stream can send its last chunk
    assert metrics.success["abort"].value == 2
    assert engine.scheduler.num_running == engine.scheduler.num_waiting == 0
    if engine.step is not None:
        assert engine.step.engine.pool.num_used == 0
        assert not engine.step.engine.has_work()


@pytest.mark.parametrize("latency_model", MODELS)
async def test_wait_lets_in_flight_work_finish_and_holds_new_work(latency_model: str) -> None:
    engine = Engine(settings(latency_model, max_running_requests=1))
    a = engine.submit(make_request("a", PROMPT, max_tokens=5))
    b = engine.submit(make_request("b", PROMPT, max_tokens=5))
    with a, b:
        runs = [asyncio.ensure_future(g.run(Collect())) for g in (a, b)]
        await asyncio.sleep(0.03)
        pause = asyncio.ensure_future(engine.pause("wait"))
        await asyncio.sleep(0)
        c = engine.submit(make_request("c", PROMPT, max_tokens=5))
        with c:
            late = asyncio.ensure_future(c.run(Collect()))
            await asyncio.wait_for(pause, 2)
            assert all(run.done() for run in runs)  # a, then b (queued before): both done
            assert [g.sequences[0].finish_reason for g in (a, b)] == ["length", "length"]
            await asyncio.sleep(0.1)
            assert not late.done()
            assert engine.scheduler.num_waiting == 1
            engine.resume()
            await asyncio.wait_for(late, 2)
    assert c.sequences[0].finish_reason == "length"


@pytest.mark.parametrize("latency_model", MODELS)
async def test_keep_freezes_sequences_and_resume_finishes_them(latency_model: str) -> None:
    engine = Engine(settings(latency_model))
    sink = Collect()
    with engine.submit(make_request("a", PROMPT, max_tokens=10)) as group:
        task = asyncio.ensure_future(group.run(sink))
        await until(lambda: len(sink.seen) >= 2)
        await engine.pause("keep")
        produced = len(sink.seen)
        engine.drop_kv_cache()  # level 1: the step engine preempts what it froze
        if engine.step is not None:
            assert engine.step.engine.pool.num_used == 0
            assert engine.step.engine.num_waiting == 1
        await asyncio.sleep(0.15)
        assert len(sink.seen) == produced
        assert not task.done()
        engine.resume()
        await asyncio.wait_for(task, 2)
    sequence = group.sequences[0]
    assert sequence.finish_reason == "length"
    assert sink.tokens_of(0) == sequence.output
    assert len(sequence.output) == 10


async def test_an_unknown_pause_mode_is_refused() -> None:
    engine = Engine(settings("constant"))
    with pytest.raises(ValueError, match="Invalid pause mode: later"):
        await engine.pause("later")
    assert not engine.scheduler.paused


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("first", ["keep", "abort"])
async def test_a_wait_pause_after_another_pause_lets_the_queued_requests_finish(
    model: str, first: str
) -> None:
    """A request that queued during a first pause is in flight for a ``wait`` pause: it
    starts and finishes, and the pause returns once it has."""
    engine = Engine(settings(model, inter_token_latency="5ms"))
    await engine.pause(first)
    with engine.submit(make_request("a", PROMPT, max_tokens=3)) as group:
        sink = Collect()
        run = asyncio.ensure_future(group.run(sink))
        await asyncio.wait_for(engine.pause("wait"), 2.0)
        assert engine.scheduler.num_running == 0
        assert len(sink.tokens_of(0)) == 3
        engine.resume()
        await asyncio.wait_for(run, 2.0)


class Timed(Collect):
    """Collects tokens and when each came out."""

    def __init__(self) -> None:
        super().__init__()
        self.at: list[float] = []

    def tokens(self, sequence: Any, start: int, texts: Any) -> bool:
        self.at.extend([time.monotonic()] * len(texts))
        return super().tokens(sequence, start, texts)


@pytest.mark.parametrize("model", MODELS)
async def test_a_keep_pause_shifts_a_timing_override_as_it_shifts_the_schedule(
    model: str,
) -> None:
    """After a ``keep`` pause the frozen tokens keep their pace instead of coming out at once."""
    engine = Engine(settings(model, inter_token_latency="0ms"))
    timing = TimingOverride(time_to_first_token=0.0, inter_token_latency=0.03)
    request = dataclasses.replace(make_request("a", "hello there", max_tokens=8), timing=timing)
    sink = Timed()
    with engine.submit(request) as group:
        run = asyncio.ensure_future(group.run(sink))
        await until(lambda: len(sink.at) >= 2)
        await engine.pause("keep")
        woke = time.monotonic() + 0.3
        await asyncio.sleep(0.3)
        engine.resume()
        await asyncio.wait_for(run, 3.0)
    after = [at for at in sink.at if at >= woke]
    assert len(after) >= 4
    assert after[-1] - after[0] >= 0.5 * 0.03 * (len(after) - 1)  # paced, not one burst


async def test_an_abort_does_not_wait_for_an_adapter_to_load() -> None:
    """Step model: a sequence still waiting for its cold adapter ends with the abort."""
    engine = Engine(
        settings("step", lora=["a", "b"], max_loras=1, max_cpu_loras=1, lora_load_latency="2s")
    )
    # one adapter fits the CPU cache: "b", registered last, is warm and "a" is not
    warm = dataclasses.replace(make_request("w", PROMPT, max_tokens=2), target=Target("b", "b"))
    with engine.submit(warm) as group:
        await group.run(Collect())
    cold = dataclasses.replace(make_request("c", PROMPT, max_tokens=2), target=Target("a", "a"))
    with engine.submit(cold) as group:
        run = asyncio.ensure_future(group.run(Collect()))
        await asyncio.sleep(0.05)  # the adapter is loading
        started = time.monotonic()
        await engine.pause("abort")
        await asyncio.wait_for(run, 1.0)
        assert time.monotonic() - started < 1.0
        assert group.sequences[0].finish_reason == "abort"
    engine.resume()
