"""``--scheduling-policy priority``: the queues in ``(priority, arrival)`` order and the
preemption victim, in the engine (virtual steps) and over HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Callable

from conftest import RunningServer
from test_scheduler_unit import generation, make_settings
from test_step_engine import COSTS, Clock, batch, loop, make  # noqa: F401  (loop: a fixture)

from llmsim.engine import Engine
from llmsim.engine.step import StepEngine


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
