"""The pacer releases every running sequence's tokens from one timer (no HTTP here)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Any

import pytest

from llmsim.engine import Engine, GenerationRequest, PromptInput, Sequence, Target
from llmsim.settings.model import Settings


def make_engine(**overrides: Any) -> Engine:
    values: dict[str, Any] = {
        "mode": "random",
        "seed": 5,
        "max_model_len": 512,
        "max_running_requests": 500,
        "time_to_first_token": 0.0,
        "inter_token_latency": 0.0,
        "config": None,
    }
    values.update(overrides)
    return Engine(Settings(**values))


def request(request_id: str, max_tokens: int, n: int = 1) -> GenerationRequest:
    return GenerationRequest(
        request_id=request_id,
        target=Target("llmsim/sim-model", None),
        prompts=[PromptInput(4, "hello there")],
        n=n,
        max_tokens=max_tokens,
        ignore_eos=True,
    )


@dataclass
class RecordingSink:
    """Keeps every batch with its arrival time; can pretend to be backed up."""

    batches: list[tuple[float, int, list[str]]] = field(default_factory=list)
    finished_ids: list[str] = field(default_factory=list)
    back_up_after: int | None = None
    drains: int = 0
    fail_at: int | None = None

    def tokens(self, sequence: Sequence, start: int, texts: Seq[str]) -> bool:
        if self.fail_at is not None and start + len(texts) > self.fail_at:
            raise ConnectionResetError("gone")
        self.batches.append((time.monotonic(), start, list(texts)))
        return self.back_up_after is not None and start + len(texts) >= self.back_up_after

    def finished(self, sequence: Sequence) -> None:
        self.finished_ids.append(sequence.request_id)

    async def drain(self) -> None:
        self.drains += 1
        self.back_up_after = None
        await asyncio.sleep(0.01)

    def received(self) -> list[str]:
        return [text for _, _, texts in self.batches for text in texts]


async def test_many_sequences_share_one_timer_and_keep_their_schedule() -> None:
    engine = make_engine(time_to_first_token="30ms", inter_token_latency="10ms")
    sinks = [RecordingSink() for _ in range(200)]
    groups = [engine.submit(request(f"r{i}", max_tokens=8)) for i in range(200)]
    started = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(*(g.run(s) for g, s in zip(groups, sinks, strict=True))), timeout=10
    )
    elapsed = time.monotonic() - started

    assert elapsed >= 0.03 + 7 * 0.01 * 0.9  # TTFT plus seven gaps, not a burst
    for group, sink in zip(groups, sinks, strict=True):
        assert sink.received() == group.sequences[0].output
        assert sink.finished_ids == [group.request.request_id]
    assert len(engine.pacer) == 0
    assert engine.scheduler.num_running == 0


async def test_zero_latency_tokens_go_out_in_bounded_batches() -> None:
    engine = make_engine()
    sink = RecordingSink()
    group = engine.submit(request("long", max_tokens=300))
    with group:
        await asyncio.wait_for(group.run(sink), timeout=5)
    sizes = [len(texts) for _, _, texts in sink.batches]
    assert sum(sizes) == 300
    assert max(sizes) <= 64  # others' writes get a turn in between
    assert sink.received() == group.sequences[0].output


async def test_a_backed_up_sink_is_drained_before_more_tokens() -> None:
    engine = make_engine(inter_token_latency="2ms")
    sink = RecordingSink(back_up_after=3)
    group = engine.submit(request("slow", max_tokens=10))
    with group:
        await asyncio.wait_for(group.run(sink), timeout=5)
    assert sink.drains == 1
    assert sink.received() == group.sequences[0].output
    assert group.sequences[0].generated == 10


async def test_a_failing_sink_aborts_the_sequence_and_frees_its_slot() -> None:
    engine = make_engine(inter_token_latency="2ms")
    sink = RecordingSink(fail_at=4)
    group = engine.submit(request("gone", max_tokens=10))
    with group, pytest.raises(ConnectionResetError):
        await asyncio.wait_for(group.run(sink), timeout=5)
    assert engine.scheduler.num_running == 0
    assert group.sequences[0].finish_reason == "abort"


async def test_a_cancelled_request_leaves_the_pacer() -> None:
    engine = make_engine(inter_token_latency="20ms")
    sink = RecordingSink()
    group = engine.submit(request("cancelled", max_tokens=50))
    with group:
        task = asyncio.ensure_future(group.run(sink))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    written = len(sink.received())
    assert 0 < written < 50
    await asyncio.sleep(0.1)  # its next deadline passes: nothing more is written
    assert len(sink.received()) == written
    assert len(engine.pacer) == 0
    assert engine.scheduler.num_running == 0
