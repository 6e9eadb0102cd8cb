"""The plain request path's shortcuts give exactly what the long way gives.

Finished requests are folded into the histograms in batches, token counts of repeated
texts are remembered, random answers draw their sentences without ``randrange`` and a
zero-latency model skips asking for each delay, and releases an answer nobody streams at once:
each is checked here against the path it replaces.
"""

from __future__ import annotations

import random
from collections.abc import Sequence as Seq
from unittest.mock import Mock

import pytest
from test_scheduler_unit import generation, make_settings

from llmsim.engine import Engine
from llmsim.engine.generation import _below, _random_answer
from llmsim.engine.sequence import Sequence
from llmsim.engine.timing import LatencyModel, LatencyProfile
from llmsim.engine.tokenizer import COUNT_MEMO_CHARS, COUNT_MEMO_SIZE, BuiltinTokenizer, tokenize
from llmsim.observability.finished_requests import FOLD_EVERY
from llmsim.observability.metrics import Metrics
from llmsim.settings.model import Settings


def finished(rng: random.Random, index: int) -> Sequence:
    """A finished sequence; about one in five is not the common request."""
    done = Mock()
    done.done.return_value = True
    arrival = rng.uniform(0, 100)
    sequence = Sequence(
        request_id=f"r{index}",
        index=0,
        adapter=None,
        prompt_tokens=rng.randint(1, 3000),
        output=["x"] * 4,
        natural_finish="stop",
        stop_reason=None,
        max_tokens=rng.randint(1, 4000),
        n=1,
        arrival=arrival,
        admitted=done,
    )
    sequence.scheduled_at = arrival + rng.expovariate(20)
    sequence.first_token_at = sequence.scheduled_at + rng.expovariate(5)
    sequence.last_token_at = sequence.first_token_at + rng.expovariate(0.5)
    sequence.generated = rng.randint(1, 500)
    sequence.finish_reason = rng.choice(["stop", "length"])
    odd = rng.random()
    if odd < 0.05:
        sequence.finish_reason = "abort"
    elif odd < 0.10:
        sequence.cached_tokens = sequence.prompt_tokens // 2
    elif odd < 0.15:
        sequence.kv_transfer_delay = 0.01
    elif odd < 0.20:
        sequence.last_token_at = None
        sequence.finished_at = sequence.first_token_at
    return sequence


def one_update_each(metrics: Metrics, sequence: Sequence) -> None:
    """What a finished sequence did to the series before the rows: one update each."""
    reason = sequence.finish_reason or "abort"
    metrics._success[reason].inc()
    if reason == "abort":
        return
    scheduled = sequence.scheduled_at or sequence.arrival
    first = sequence.first_token_at or scheduled
    last = sequence.last_token_at or sequence.finished_at or first
    phase = metrics._phase
    for name, value in (
        ("e2e", last - sequence.arrival),
        ("queue", scheduled - sequence.arrival),
        ("inference", last - scheduled),
        ("prefill", first - scheduled),
        ("decode", last - first),
    ):
        phase[name].observe(value)
    if sequence.generated > 1:
        metrics._request_tpot.observe((last - first) / (sequence.generated - 1))
    prompt = sequence.prompt_tokens
    metrics._request_prompt_tokens.observe(prompt)
    metrics._request_generation_tokens.observe(sequence.generated)
    metrics._request_max_tokens.observe(sequence.max_tokens)
    if sequence.cached_tokens or sequence.kv_transfer_delay is not None:
        cached = prompt if sequence.kv_transfer_delay is not None else sequence.cached_tokens
        metrics.request_kv_computed.replace(prompt, prompt - cached)


def series(metrics: Metrics) -> list[str]:
    text = metrics.exposition().decode()
    return [line for line in text.splitlines() if "_created" not in line]


def numbers(lines: list[str]) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines if line[0] != "#"
    }


@pytest.mark.parametrize("count", [1, FOLD_EVERY - 1, FOLD_EVERY, 3 * FOLD_EVERY + 7])
def test_batched_finished_requests_equal_one_update_each(count: int) -> None:
    settings = Settings(config=None)
    batched, eager = Metrics(settings), Metrics(settings)
    rng = random.Random(count)
    for index in range(count):
        sequence = finished(rng, index)
        batched.sequence_finished(sequence)
        one_update_each(eager, sequence)
    got, want = numbers(series(batched)), numbers(series(eager))
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
    assert any("request_success_total" in name and value > 0 for name, value in got.items())


def test_a_direct_read_sees_requests_not_yet_folded() -> None:
    metrics = Metrics(Settings(config=None))
    sequence = finished(random.Random(1), 0)
    sequence.finish_reason, sequence.cached_tokens, sequence.kv_transfer_delay = "stop", 0, None
    sequence.last_token_at = (sequence.first_token_at or 0.0) + 1.0
    metrics.sequence_finished(sequence)
    assert metrics.success["stop"].value == 1
    assert sum(metrics.phase["e2e"].counts) == 1


def test_token_counts_are_remembered_within_bounds() -> None:
    tokenizer = BuiltinTokenizer()
    text = "Summarise the benefits of load-aware routing for LLM inference."
    assert tokenizer.count(text) == tokenizer.count(text) == len(tokenize(text))
    for index in range(COUNT_MEMO_SIZE + 50):
        assert tokenizer.count(f"prompt number {index}") == len(tokenize(f"prompt number {index}"))
    assert len(tokenizer._counts) == COUNT_MEMO_SIZE
    assert text not in tokenizer._counts  # the oldest went first
    long_text = "word " * (COUNT_MEMO_CHARS // 5 + 1)
    assert tokenizer.count(long_text) == len(tokenize(long_text))
    assert long_text not in tokenizer._counts


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 31, 100, 4096, 10**9])
def test_sentence_draws_are_randranges(n: int) -> None:
    stdlib, ours = random.Random(n), random.Random(n)
    assert [stdlib.randrange(n) for _ in range(300)] == [
        _below(ours.getrandbits, n) for _ in range(300)
    ]


@pytest.mark.parametrize("ignore_eos", [True, False])
def test_random_answers_are_what_randrange_draws_gave(ignore_eos: bool) -> None:
    """The answer the same seed gave before the draws were inlined (written the old way)."""
    from llmsim.engine.corpus import corpus_tokens

    sentences, spaced = corpus_tokens(tokenize)
    for seed in range(20):
        limit = 1 + seed * 37
        rng = random.Random(seed)
        target = limit if ignore_eos else rng.randint(1, limit)
        tokens = list(sentences[rng.randrange(len(sentences))])
        while len(tokens) < target:
            tokens.extend(spaced[rng.randrange(len(sentences))])
        got = _random_answer(limit, ignore_eos, random.Random(seed), tokenize)
        assert got.tokens == tokens[:limit]


def test_only_a_zero_constant_model_is_instant() -> None:
    def model(**changes: object) -> LatencyModel:
        values: dict[str, object] = {
            "time_to_first_token": 0.0,
            "time_to_first_token_std_dev": 0.0,
            "inter_token_latency": 0.0,
            "inter_token_latency_std_dev": 0.0,
            "time_factor_under_load": 1.0,
            "latency_model": "constant",
            "frontend_latency": 0.0,
            "prefill_time_per_token": 0.0,
        }
        values.update(changes)
        return LatencyModel(LatencyProfile(**values), random.Random(0))  # type: ignore[arg-type]

    assert model().instant
    assert model(time_factor_under_load=3.0, time_to_first_token_std_dev=0.5).instant
    assert not model(time_to_first_token=0.01).instant
    assert not model(inter_token_latency=0.001).instant
    assert not model(latency_model="per-token", prefill_time_per_token=0.001).instant


COUNTED = ("_count", "_total", "_bucket")


class Collect:
    """A sink that takes every token and never backs up: the pacer's way, streamed."""

    def tokens(self, sequence: Sequence, start: int, texts: Seq[str]) -> bool:
        return False

    def finished(self, sequence: Sequence) -> None:
        pass

    async def drain(self) -> None:
        pass


async def test_a_zero_latency_answer_nobody_streams_is_released_at_once_as_the_pacer_would() -> (
    None
):
    runs = {}
    for way, sink in [("at once", None), ("paced", Collect())]:
        settings = make_settings(max_model_len=512, seed=None)
        metrics = Metrics(settings)
        engine = Engine(settings, observer=metrics)
        group = engine.submit(generation(way, prompt_tokens=20, max_tokens=200))
        with group:
            await group.run(sink)
        [sequence] = group.sequences
        assert sequence.generated == 200
        assert sequence.finish_reason == "length"
        assert engine.scheduler.num_running == 0
        assert len(engine.pacer) == 0
        runs[way] = (sequence, numbers(series(metrics)))
    at_once, paced = runs["at once"], runs["paced"]
    assert at_once[0].first_token_at == at_once[0].last_token_at  # one batch, no timer
    assert paced[0].first_token_at != paced[0].last_token_at  # 64 tokens a batch, 4 turns
    counts = [name for name in paced[1] if name.split("{")[0].endswith(COUNTED)]
    assert len(counts) > 20  # every count and bucket of every series, not the sums of times
    assert {name: at_once[1][name] for name in counts} == {name: paced[1][name] for name in counts}
    assert (
        at_once[1]['vllm:generation_tokens_total{engine="0",model_name="llmsim/sim-model"}'] == 200
    )
