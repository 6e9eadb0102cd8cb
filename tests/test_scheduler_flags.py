"""vLLM's scheduler flags in the step engine: ``--scheduling-policy priority`` (the queues in
``(priority, arrival)`` order, the preemption victim; also over HTTP) and chunked prefill."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from conftest import RunningServer
from pydantic import ValidationError
from test_scheduler_unit import generation, make_settings
from test_step_engine import COSTS, Clock, batch, loop, make  # noqa: F401  (loop: a fixture)

from llmsim.engine import Engine
from llmsim.engine.step import StepEngine
from llmsim.engine.step.plan import Chunking
from llmsim.settings.model import Settings


def test_the_running_sequence_last_in_priority_order_is_preempted(
    loop: asyncio.AbstractEventLoop,  # noqa: F811
) -> None:
    # 6 blocks of 4 tokens, three sequences of 8 prompt tokens: the second step needs a block
    engine = StepEngine(
        num_blocks=6, block_size=4, enable_prefix_caching=False, costs=COSTS, by_priority=True
    )
    a, b, c = (make(loop, name, 8, 8) for name in "abc")
    a.priority = 5  # the least urgent, though admitted first
    for sequence in (a, b, c):
        engine.add(sequence)
    clock = Clock(engine)
    clock.step()
    plan = clock.step()
    assert [seq.sequence.request_id for seq in plan.preempted] == ["a"]  # fcfs would take c
    assert batch(plan) == [("b", 1), ("c", 1)]
    late = make(loop, "late", 4, 2)  # arrives after a, more urgent: queued ahead of it
    late.priority = -1
    engine.add(late)
    assert [s.sequence.request_id for s in engine.scheduler.waiting] == ["late", "a"]
    clock.run()
    assert a.num_preemptions == 1
    assert [s.generated for s in (a, b, c, late)] == [8, 8, 8, 2]


async def test_the_queue_serves_lower_priority_values_first() -> None:
    engine = Engine(make_settings(max_running_requests=1, scheduling_policy="priority"))
    groups = []
    for name, priority in [("first", 0), ("low", 5), ("urgent", -1), ("low2", 5), ("zero", 0)]:
        request = generation(name)
        request.priority = priority
        groups.append(engine.submit(request))
    order = [sequence.request_id for sequence in engine.scheduler.waiting]
    assert order == ["urgent", "zero", "low", "low2"]  # equal priorities keep arrival order
    for group in groups:
        group.abort()
    fcfs = Engine(make_settings(max_running_requests=1))
    held = []
    for name in ("first", "low", "urgent"):
        request = generation(name)
        request.priority = 7 if name == "low" else -1
        held.append(fcfs.submit(request))
    assert [s.request_id for s in fcfs.scheduler.waiting] == ["low", "urgent"]  # ignored
    for group in held:
        group.abort()


def test_an_urgent_request_overtakes_the_queue_over_http(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server(
        "--scheduling-policy", "priority", "--max-num-seqs", "1", "--inter-token-latency", "30ms"
    )  # fmt: skip
    finished: list[str] = []

    def ask(name: str, priority: int) -> None:
        body = {"prompt": name, "max_tokens": 6, "ignore_eos": True, "priority": priority}
        request = urllib.request.Request(
            server.base_url + "/v1/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=20) as response:
            assert response.status == 200
        finished.append(name)

    threads = []
    for name, priority in [("running", 0), ("later", 9), ("urgent", -3)]:
        thread = threading.Thread(target=ask, args=(name, priority))
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # in this order: the first runs, the other two wait
    for thread in threads:
        thread.join(20)
    assert finished == ["running", "urgent", "later"]


# -- chunked prefill (vLLM's --long-prefill-token-threshold, --no-enable-chunked-prefill) -----
def test_a_long_prompt_is_cut_to_the_threshold_only_while_others_wait(
    loop: asyncio.AbstractEventLoop,  # noqa: F811
) -> None:
    chunking = Chunking(long_prefill=16)
    engine = StepEngine(num_blocks=256, costs=COSTS, chunking=chunking)
    engine.add(make(loop, "long", 100, 2))
    engine.add(make(loop, "short", 10, 2))
    clock = Clock(engine)
    assert batch(clock.step()) == [("long", 16), ("short", 10)]
    alone = StepEngine(num_blocks=256, costs=COSTS, chunking=chunking)
    alone.add(make(loop, "long", 100, 2))
    assert batch(Clock(alone).step()) == [("long", 100)]  # nobody to starve
    fair = StepEngine(
        num_blocks=256, costs=COSTS, chunking=Chunking(long_prefill=16, adaptive=True)
    )
    fair.add(make(loop, "long", 100, 2))
    fair.add(make(loop, "short", 10, 2))
    fair.scheduler.max_num_batched_tokens = 128
    assert batch(Clock(fair).step()) == [("long", 64), ("short", 10)]  # 128 / 2 sequences


def test_without_chunked_prefill_a_prompt_waits_for_room(
    loop: asyncio.AbstractEventLoop,  # noqa: F811
) -> None:
    for enabled, expected in [(True, [("a", 1), ("b", 63)]), (False, [("a", 1)])]:
        engine = StepEngine(
            num_blocks=256, max_num_batched_tokens=64, costs=COSTS, chunking=Chunking(enabled)
        )
        engine.add(make(loop, "a", 8, 4))
        clock = Clock(engine)
        clock.step()  # a's prompt: from now on it decodes one token a step
        engine.add(make(loop, "b", 64, 2))
        assert batch(clock.step()) == expected
        clock.run()


def test_the_prefill_flags_are_checked_as_vllm_checks_them() -> None:
    with pytest.raises(ValidationError, match="cannot be greater than the max_model_len"):
        Settings(long_prefill_token_threshold=9000, max_model_len=4096, config=None)
    with pytest.raises(ValidationError, match="is smaller than max_model_len"):
        Settings(enable_chunked_prefill=False, max_num_batched_tokens=2048, config=None)


# -- admission limits (vLLM's --max-num-active-seqs, --max-num-scheduled-tokens, --watermark) --
def step_engine(**overrides: Any) -> StepEngine:
    settings = make_settings(latency_model="step", max_model_len=512, **overrides)
    return StepEngine.from_settings(settings)


def test_active_sequences_and_the_scheduled_token_budget_bound_each_step(
    loop: asyncio.AbstractEventLoop,  # noqa: F811
) -> None:
    engine = step_engine(max_running_requests=8, max_num_active_seqs=2)
    for name in "abcde":
        engine.add(make(loop, name, 8, 3))
    clock = Clock(engine)
    assert batch(clock.step()) == [("a", 8), ("b", 8)]  # 8 slots, 2 admitted
    assert engine.scheduler.num_waiting == 3
    clock.run()
    assert max(len(plan.chunks) for plan in clock.plans) == 2
    budget = step_engine(max_num_batched_tokens=512, max_num_scheduled_tokens=40)
    budget.add(make(loop, "long", 100, 2))
    assert batch(Clock(budget).step()) == [("long", 40)]


def test_the_watermark_keeps_blocks_free_when_a_sequence_joins_others(
    loop: asyncio.AbstractEventLoop,  # noqa: F811
) -> None:
    # 32 blocks of 16 tokens; a watermark of 0.5 keeps 16 of them free for what runs already
    for watermark, expected in [(0.0, [("a", 1), ("b", 240)]), (0.5, [("a", 1)])]:
        engine = step_engine(kv_cache_size=512, block_size=16, watermark=watermark)
        a, b = make(loop, "a", 200, 4), make(loop, "b", range(1000, 1240), 2)
        engine.add(a)  # 13 blocks, admitted alone: no watermark
        clock = Clock(engine)
        assert batch(clock.step()) == [("a", 200)]
        engine.add(b)  # 15 more: 28 of 32 fit, but not with 16 to spare
        assert batch(clock.step()) == expected
        clock.run()
        assert (a.generated, b.generated) == (4, 2)  # b runs once a has left


def test_prompts_wait_for_the_prefill_cadence_while_others_decode(
    loop: asyncio.AbstractEventLoop,  # noqa: F811
) -> None:
    for interval, expected in [
        (1, [[("a", 1), ("b", 8)], [("a", 1), ("b", 1)], [("a", 1)]]),
        (3, [[("a", 1)], [("a", 1)], [("a", 1), ("b", 8)]]),  # 3 steps after a's prompt
    ]:
        engine = step_engine(prefill_schedule_interval=interval)
        engine.add(make(loop, "a", 8, 12))
        clock = Clock(engine)
        assert batch(clock.step()) == [("a", 8)]  # alone: nothing decodes, nothing held
        engine.add(make(loop, "b", range(100, 108), 2))
        assert [batch(clock.step()) for _ in range(3)] == expected


def test_the_cadence_lets_go_while_the_queue_outgrows_a_releasing_step(
    loop: asyncio.AbstractEventLoop,  # noqa: F811
) -> None:
    engine = step_engine(prefill_schedule_interval=3, max_num_batched_tokens=64)
    engine.add(make(loop, "a", 8, 30))
    clock = Clock(engine)
    clock.step()
    for number, name in enumerate("bcd", 1):
        engine.add(make(loop, name, range(100 * number, 100 * number + 60), 2))
    prefill = [clock.step().prefill_tokens for _ in range(7)]
    # held twice; the release leaves d waiting, so the next step computes prompts too; then,
    # the queue empty, d's last chunk waits for the cadence again
    assert prefill == [0, 0, 63, 62, 0, 0, 55]


def test_a_prompt_is_admitted_only_when_all_of_it_fits(
    loop: asyncio.AbstractEventLoop,  # noqa: F811
) -> None:
    # 32 blocks of 16 tokens, 64-token steps: a's prompt holds 13 blocks, b's needs 25 more
    for whole, expected in [(True, [("a", 1)]), (False, [("a", 1), ("b", 63)])]:
        engine = step_engine(
            kv_cache_size=512,
            block_size=16,
            max_num_batched_tokens=64,
            scheduler_reserve_full_isl=whole,
        )
        a, b = make(loop, "a", 200, 40), make(loop, "b", range(1000, 1400), 2)
        engine.add(a)
        clock = Clock(engine)
        while a.generated == 0:  # four chunks of a's prompt
            clock.step()
        engine.add(b)
        assert batch(clock.step()) == expected  # its first chunk alone would fit
        clock.run()
        assert (a.generated, b.generated) == (40, 2)


def test_a_cached_prefix_is_admitted_first_within_the_window_once_the_cache_fills(
    loop: asyncio.AbstractEventLoop,  # noqa: F811
) -> None:
    # 32 blocks of 16 tokens; a long runner holds 18, so the cache is over half used
    def run(**flags: Any) -> tuple[list[tuple[str, int]], int]:
        engine = step_engine(kv_cache_size=512, block_size=16, **flags)
        engine.add(make(loop, "runner", range(5000, 5272), 40))
        engine.add(make(loop, "warm", 160, 1))  # leaves its 10 blocks in the prefix cache
        clock = Clock(engine)
        clock.step()
        cold, hot = make(loop, "cold", range(9000, 9096), 2), make(loop, "hot", 160, 2)
        engine.add(cold)  # arrives first; its blocks (6, then a 7th) would evict warm's tail
        engine.add(hot)  # warm's prompt again: 9 of its blocks can hit
        admitted = batch(clock.step())
        clock.run()
        assert (cold.generated, hot.generated) == (2, 2)
        return admitted, hot.cached_tokens

    in_arrival_order = ([("runner", 1), ("cold", 96)], 112)  # hot waits, and loses 3 blocks
    assert run() == in_arrival_order
    assert run(cache_aware_admission_window=4) == ([("runner", 1), ("hot", 16)], 144)
    assert run(cache_aware_admission_window=1) == in_arrival_order  # hot is beyond the window
    assert run(cache_aware_admission_window=4, cache_aware_admission_threshold=0.6) == (
        in_arrival_order  # 18 of 32 blocks used: under the threshold
    )
    assert run(cache_aware_admission_window=4, scheduling_policy="priority") == in_arrival_order
    assert run(cache_aware_admission_window=4, enable_prefix_caching=False)[1] == 0


def test_more_active_sequences_than_the_batch_holds_is_vllms_error() -> None:
    with pytest.raises(ValidationError, match=r"max_num_active_seqs \(9\) cannot be greater"):
        Settings(max_running_requests=8, max_num_active_seqs=9, config=None)
