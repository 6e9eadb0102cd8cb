"""Timing overrides (response rules, replay) in step mode: a sequence's tokens come out no
earlier than its override's schedule, while it keeps its batch slot and its KV blocks."""

from __future__ import annotations

import time
from typing import Any

import pytest

from llmsim.api.http.app import create_app
from llmsim.engine.step import StepCosts, StepEngine
from llmsim.engine.step.virtual import VirtualRun, virtual_sequence
from llmsim.engine.timing import TimingOverride
from llmsim.settings.model import Settings

ITL = 0.02
COSTS = StepCosts(inter_token_latency=ITL, prefill_time_per_token=0.001)


def test_an_override_holds_tokens_back_but_keeps_the_blocks() -> None:
    engine = StepEngine(num_blocks=64, block_size=16, costs=COSTS)
    run = VirtualRun(engine)
    slow = virtual_sequence("slow", 40, 4)
    slow.timing = TimingOverride(time_to_first_token=1.0, inter_token_latency=0.1)
    plain = virtual_sequence("plain", 40, 10)
    run.arrive(slow, at=0.0)
    run.arrive(plain, at=0.0)
    while run.now < 0.5:
        run.step()
    assert engine.num_running == 1  # the slow one waits in its slot ...
    assert engine.pool.num_used == 3  # ... holding its prompt's blocks
    assert slow.generated == 0
    run.until_idle()
    assert plain.first_token_at is not None
    assert plain.first_token_at < 0.2  # the other sequence was not held up
    assert slow.first_token_at is not None
    assert 1.0 <= slow.first_token_at <= 1.0 + 3 * ITL
    assert slow.last_token_at is not None
    assert 1.3 <= slow.last_token_at <= 1.3 + 3 * ITL  # three gaps of 100 ms
    assert slow.generated == 4
    assert engine.pool.num_used == 0


def test_an_override_faster_than_the_steps_is_only_a_floor() -> None:
    engine = StepEngine(num_blocks=64, block_size=16, costs=COSTS)
    run = VirtualRun(engine)
    fast = virtual_sequence("fast", 16, 5)
    fast.timing = TimingOverride(inter_token_latency=0.001)
    run.arrive(fast, at=0.0)
    run.until_idle()
    assert fast.first_token_at is not None
    assert fast.last_token_at is not None
    assert fast.last_token_at - fast.first_token_at == pytest.approx(4 * ITL, abs=0.002)


async def test_a_rule_with_a_long_ttft_is_honoured_in_step_mode(aiohttp_client: Any) -> None:
    rules = {"rules": [{"contains": "slow", "text": "one two three", "time_to_first_token": "1s"}]}
    settings = Settings(latency_model="step", inter_token_latency=0.005, responses=rules)
    client = await aiohttp_client(create_app(settings))

    async def ask(text: str) -> tuple[float, dict[str, Any]]:
        started = time.monotonic()
        body = {"messages": [{"role": "user", "content": text}], "max_tokens": 5}
        response = await client.post("/v1/chat/completions", json=body)
        assert response.status == 200
        return time.monotonic() - started, await response.json()

    elapsed, body = await ask("slow please")
    assert elapsed >= 0.95
    assert elapsed < 5.0
    assert body["choices"][0]["message"]["content"] == "one two three"
    elapsed, _ = await ask("quick please")
    assert elapsed < 0.9
