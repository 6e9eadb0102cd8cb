"""vLLM's ``--stream-interval`` and the request's ``stream_interval``: the grouping of a
stream's tokens without HTTP, then the chunks a real server writes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from collections.abc import Sequence as Seq
from typing import Any

import pytest
from conftest import RunningServer, post_json, start_server, stream_events
from test_step_engine import make

from llmsim.api.http.sse import CuttingSink
from llmsim.engine import Sequence
from llmsim.engine.generation import ToolSpan
from llmsim.engine.pacer import MAX_BATCH
from llmsim.engine.stream_interval import IntervalSink, with_interval
from llmsim.settings.model import Settings


class Recorder:
    """The API's sink, as the interval sink sees it: what it was handed, call by call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[str]]] = []
        self.finishes = 0

    def tokens(self, sequence: Sequence, start: int, texts: Seq[str]) -> bool:
        self.calls.append((start, list(texts)))
        return False

    def finished(self, sequence: Sequence) -> None:
        self.finishes += 1

    async def drain(self) -> None:
        return None


def make_sequence(tokens: int) -> Sequence:
    return make(asyncio.get_running_loop(), "r", 3, tokens)


def release(sink: IntervalSink, sequence: Sequence, batches: list[int]) -> None:
    """Release the output as the engine would, ``batches`` tokens at a time."""
    start = 0
    for count in batches:
        sink.tokens(sequence, start, sequence.output[start : start + count])
        start += count


def starts(recorder: Recorder) -> list[tuple[int, int]]:
    return [(start, len(texts)) for start, texts in recorder.calls]


async def test_first_token_alone_then_groups_whatever_the_engine_batches() -> None:
    for batches in ([1] * 11, [11], [3, 5, 3], [2, 2, 2, 2, 2, 1]):
        recorder = Recorder()
        sequence = make_sequence(11)
        release(IntervalSink(recorder, 4), sequence, batches)
        assert starts(recorder) == [(0, 1), (1, 4), (5, 4), (9, 2)], batches
        assert [t for _, texts in recorder.calls for t in texts] == sequence.output


async def test_a_group_waits_for_its_last_token() -> None:
    recorder = Recorder()
    sequence = make_sequence(9)
    sink = IntervalSink(recorder, 3)
    sink.tokens(sequence, 0, sequence.output[:2])  # the first goes, the second waits
    assert starts(recorder) == [(0, 1)]
    sink.tokens(sequence, 2, sequence.output[2:3])
    assert starts(recorder) == [(0, 1)]
    sink.tokens(sequence, 3, sequence.output[3:4])  # positions 1..3 complete
    assert starts(recorder) == [(0, 1), (1, 3)]


async def test_groups_end_where_thought_text_and_tool_calls_meet() -> None:
    recorder = Recorder()
    sequence = make_sequence(14)
    sequence.reasoning_end = 3
    sequence.tool_calls = (ToolSpan("f", 6, 12),)
    release(IntervalSink(recorder, 4), sequence, [14])
    # grid [0] [1-4] [5-8] [9-12] [13], cut at 3, 6 and 12
    assert starts(recorder) == [(0, 1), (1, 2), (3, 2), (5, 1), (6, 3), (9, 3), (12, 1), (13, 1)]


async def test_held_tokens_of_a_cut_short_sequence_still_go_out() -> None:
    recorder = Recorder()
    sequence = make_sequence(10)
    sink = IntervalSink(recorder, 4)
    sink.tokens(sequence, 0, sequence.output[:3])
    sequence.generated = 3
    sequence.cut()  # a pause's abort: the output ends at the tokens produced
    sink.finished(sequence)
    assert starts(recorder) == [(0, 1), (1, 2)]
    assert recorder.finishes == 0  # the held chunk was the last: it carries the finish
    other = Recorder()
    sequence = make_sequence(10)
    IntervalSink(other, 4).finished(sequence)
    assert other.finishes == 1


async def test_an_interval_of_one_adds_nothing() -> None:
    recorder = Recorder()
    assert with_interval(recorder, 1) is recorder
    assert isinstance(with_interval(recorder, 2), IntervalSink)


async def test_wrappers_keep_the_writers_batch_limit() -> None:
    """A logprob stream's writer lowers the tokens the pacer releases at once; a grouping or
    a fault in front of it must not hide that from the pacer."""
    writer = Recorder()
    writer.max_batch = 8  # type: ignore[attr-defined]
    chain = CuttingSink(IntervalSink(writer, 3), 100)
    assert chain.max_batch == 8
    assert IntervalSink(Recorder(), 3).max_batch == MAX_BATCH


def test_the_setting_is_vllms_bound() -> None:
    with pytest.raises(ValueError, match="stream_interval"):
        Settings(stream_interval=0, config=None)
    assert Settings(stream_interval=8, config=None).stream_interval == 8


@pytest.fixture(scope="module")
def grouped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(["--stream-interval", "4"], tmp_path_factory.mktemp("interval"))
    yield server
    server.stop()


def chat(tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": "llmsim/sim-model",
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": tokens,
        "ignore_eos": True,
        **extra,
    }


def deltas(events: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any]) -> list[Any]:
    return [key(event["choices"][0]) for event in events if event["choices"]]


def test_chat_chunks_carry_the_servers_interval(grouped: RunningServer) -> None:
    options = {"include_usage": True, "continuous_usage_stats": True}
    events = stream_events(grouped, "/v1/chat/completions", chat(10, stream_options=options))
    contents = deltas(events, lambda choice: choice["delta"].get("content"))
    assert contents[0] == ""  # the role's chunk
    usage = [event["usage"]["completion_tokens"] for event in events]
    assert usage == [0, 1, 5, 9, 10, 10]  # role, [0], [1-4], [5-8], [9], the usage chunk
    finishes = deltas(events, lambda choice: choice["finish_reason"])
    assert finishes == [None, None, None, None, "length"]
    status, whole = post_json(grouped, "/v1/chat/completions", chat(10, seed=5))
    assert status == 200
    again = stream_events(grouped, "/v1/chat/completions", chat(10, seed=5))
    text = "".join(deltas(again, lambda choice: choice["delta"].get("content") or ""))
    assert text == whole["choices"][0]["message"]["content"]  # grouping loses nothing


def test_a_request_may_raise_the_interval_but_not_lower_it(grouped: RunningServer) -> None:
    def chunks(**extra: Any) -> int:
        events = stream_events(grouped, "/v1/chat/completions", chat(13, **extra))
        return len(deltas(events, lambda choice: choice["delta"].get("content"))) - 1

    assert chunks() == 4  # [0] [1-4] [5-8] [9-12]
    assert chunks(stream_interval=6) == 3  # [0] [1-6] [7-12]
    assert chunks(stream_interval=1) == 4  # the server's 4 is the least
    status, body = post_json(grouped, "/v1/chat/completions", {**chat(3), "stream_interval": 0})
    assert status == 400
    assert body["error"]["param"] == "stream_interval"


def test_completion_logprobs_cover_each_chunks_tokens(grouped: RunningServer) -> None:
    body = {"model": "llmsim/sim-model", "prompt": "Once", "max_tokens": 6, "ignore_eos": True}
    events = stream_events(grouped, "/v1/completions", {**body, "logprobs": 1, "echo": True})
    choices = [event["choices"][0] for event in events if event["choices"]]
    counts = [len(choice["logprobs"]["tokens"]) for choice in choices]
    assert counts[1:] == [4, 1]  # [1-4], [5]; the first carries the echoed prompt too
    for choice in choices:
        logprobs = choice["logprobs"]
        assert "".join(logprobs["tokens"]) == choice["text"]
        assert len(logprobs["text_offset"]) == len(logprobs["token_logprobs"])
