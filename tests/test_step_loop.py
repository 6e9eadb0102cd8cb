"""The step engine inside :class:`~llmsim.engine.Engine` on a real event loop (no HTTP)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence as Seq
from typing import Any

import pytest

from llmsim.engine import Engine, GenerationRequest, PromptInput, Sequence, Target
from llmsim.engine.tokenizer import token_ids
from llmsim.observability.metrics import Metrics
from llmsim.settings.model import Settings


@pytest.fixture(autouse=True)
def _no_llmsim_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LLMSIM_"):
            monkeypatch.delenv(name)


def step_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "latency_model": "step",
        "mode": "random",
        "seed": 3,
        "max_model_len": 512,
        "kv_cache_size": 4096,
        "config": None,
    }
    values.update(overrides)
    return Settings(**values)


def request(name: str, text: str, max_tokens: int = 5, n: int = 1) -> GenerationRequest:
    ids = token_ids(text)
    return GenerationRequest(
        request_id=name,
        target=Target("llmsim/sim-model", None),
        prompts=[PromptInput(len(ids), text, ids)],
        n=n,
        max_tokens=max_tokens,
        ignore_eos=True,
    )


class Collect:
    def __init__(self) -> None:
        self.seen: list[tuple[int, int, str]] = []
        self.done: list[int] = []

    def tokens_of(self, index: int) -> list[str]:
        return [text for i, _, text in self.seen if i == index]

    def tokens(self, sequence: Sequence, start: int, texts: Seq[str]) -> bool:
        self.seen.extend((sequence.index, start + k, t) for k, t in enumerate(texts))
        return False

    def finished(self, sequence: Sequence) -> None:
        self.done.append(sequence.index)

    async def drain(self) -> None:
        return None


async def test_every_token_comes_out_in_order_and_the_cache_empties() -> None:
    metrics = Metrics(step_settings())
    engine = Engine(step_settings(), observer=metrics)
    assert engine.step is not None
    assert engine.needs_token_ids
    metrics.track(engine.scheduler, 4096)
    metrics.track_step(engine.step, engine.settings)
    sink = Collect()
    with engine.submit(request("a", "hello there " * 40, max_tokens=7, n=2)) as group:
        await group.run(sink)
    assert sorted(sink.done) == [0, 1]
    for index, sequence in enumerate(group.sequences):
        assert sink.tokens_of(index) == sequence.output
        assert [pos for i, pos, _ in sink.seen if i == index] == list(range(7))
    assert group.sequences[1].cached_tokens > 0  # the sibling found the shared prompt
    assert group.cached_tokens == group.sequences[0].cached_tokens == 0
    assert engine.step.engine.pool.num_used == 0
    assert engine.scheduler.num_running == 0
    text = metrics.exposition().decode()
    assert 'vllm:prefix_cache_hits_total{engine="0",model_name="llmsim/sim-model"}' in text
    assert metrics.prefix_cache_queries.value > 0
    assert metrics.iteration_tokens.counts[-1] == 0


async def test_zero_latency_runs_count_every_token_in_the_token_metrics() -> None:
    """Runs of decode steps report their tokens in one call: the counts stay exact."""
    metrics = Metrics(step_settings(max_model_len=2048, kv_cache_size=8192))
    engine = Engine(step_settings(max_model_len=2048, kv_cache_size=8192), observer=metrics)
    sink = Collect()
    with engine.submit(request("a", "hello", max_tokens=300, n=3)) as group:
        await group.run(sink)
    assert [len(sink.tokens_of(index)) for index in range(3)] == [300, 300, 300]
    assert metrics.generation_tokens.value == 900
    assert sum(metrics.itl.counts) == 900 - 3  # every token after each first one
    assert metrics.itl.counts[0] >= 800  # at zero latency they come 0 s apart


async def test_a_cancelled_request_frees_its_blocks_at_once() -> None:
    engine = Engine(step_settings(inter_token_latency="50ms"))
    assert engine.step is not None
    group = engine.submit(request("a", "hello " * 100, max_tokens=50))
    task = asyncio.ensure_future(group.run(Collect()))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if engine.step.engine.pool.num_used:
            break
    assert engine.step.engine.pool.num_used > 0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    group.abort()
    assert engine.step.engine.pool.num_used == 0
    assert not engine.step.engine.has_work()
    assert engine.scheduler.num_running == 0


async def test_step_parameters_change_at_run_time() -> None:
    engine = Engine(step_settings())
    assert engine.step is not None
    engine.reconfigure(step_settings(decode_time_per_sequence="2ms", max_num_batched_tokens=128))
    assert engine.step.engine.costs.decode_time_per_sequence == 0.002
    assert engine.step.engine.scheduler.max_num_batched_tokens == 128


def test_a_cache_smaller_than_the_context_window_is_refused() -> None:
    with pytest.raises(ValueError, match=r"kv-cache-size \(100 tokens\).*max-model-len \(512"):
        step_settings(kv_cache_size=100)
    Settings(config=None, kv_cache_size=100, max_model_len=512)  # other models do not care


async def test_the_app_wires_the_kv_listener_hasher_and_sleep_into_the_step_engine() -> None:
    from llmsim.api import create_app
    from llmsim.api.admin.sleep import SLEEP
    from llmsim.api.http.keys import ENGINE
    from llmsim.api.http.kv_setup import BLOCK_HASHER, KV_LISTENER

    app = create_app(step_settings(enable_sleep_mode=True))
    engine = app[ENGINE]
    assert engine.step is not None
    core = engine.step.engine
    assert core.listener is app[KV_LISTENER]
    assert core.pool.listener is app[KV_LISTENER]
    assert core.kv.hasher is app[BLOCK_HASHER]
    with engine.submit(request("a", "hello there " * 20, max_tokens=2)) as group:
        await group.run(Collect())
    assert core.pool.num_cached > 0
    await app[SLEEP].sleep(1)  # drops the KV cache, as vLLM's sleep does
    assert core.pool.num_cached == 0
