"""vLLM's ``--enable-per-request-metrics``: a one-choice chat or completion answer carries
its own timings, computed from the engine's timestamps as vLLM computes them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RunningServer, post_json, start_server, stream_events

TIMINGS = {
    "time_to_first_token_ms",
    "generation_time_ms",
    "queue_time_ms",
    "mean_itl_ms",
    "tokens_per_second",
}
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "ignore_eos": True}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        [
            "--enable-per-request-metrics",
            "--time-to-first-token",
            "60ms",
            "--inter-token-latency",
            "20ms",
        ],
        tmp_path_factory.mktemp("metrics"),
    )
    yield running
    running.stop()


def check_timings(metrics: dict[str, Any]) -> None:
    # Generous bounds: a loaded machine only adds time.
    assert 45 <= metrics["time_to_first_token_ms"] <= 1000
    assert 4 * 15 <= metrics["generation_time_ms"] <= 2000
    assert metrics["mean_itl_ms"] == pytest.approx(metrics["generation_time_ms"] / 4)
    assert 0 <= metrics["queue_time_ms"] <= 500
    inference_s = (metrics["time_to_first_token_ms"] + metrics["generation_time_ms"]) / 1000
    assert metrics["tokens_per_second"] == pytest.approx(5 / inference_s, rel=1e-6)


def test_one_choice_answers_carry_their_timings(server: RunningServer) -> None:
    _, chat = post_json(server, "/v1/chat/completions", CHAT)
    assert set(chat["metrics"]) == {*TIMINGS, "speculative_decoding"}
    assert chat["metrics"]["speculative_decoding"] is None
    check_timings(chat["metrics"])
    _, completion = post_json(
        server, "/v1/completions", {"prompt": "Hi", "max_tokens": 5, "ignore_eos": True}
    )
    check_timings(completion["metrics"])

    # A stream carries them on its usage chunk, without nulls; without usage, nowhere.
    usage = stream_events(
        server, "/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": True}}
    )
    assert [chunk for chunk in usage if "metrics" in chunk] == [usage[-1]]
    assert set(usage[-1]["metrics"]) == TIMINGS
    check_timings(usage[-1]["metrics"])
    assert not any(
        "metrics" in chunk for chunk in stream_events(server, "/v1/chat/completions", CHAT)
    )


def test_several_choices_and_other_apis_have_none(server: RunningServer) -> None:
    _, several = post_json(server, "/v1/chat/completions", {**CHAT, "n": 2})
    assert "metrics" not in several
    _, prompts = post_json(server, "/v1/completions", {"prompt": ["a", "b"], "max_tokens": 2})
    assert "metrics" not in prompts
    message = {"model": several["model"], "max_tokens": 3, "messages": CHAT["messages"]}
    _, anthropic = post_json(server, "/v1/messages", message)
    assert "metrics" not in anthropic
    _, one = post_json(server, "/v1/chat/completions", {**CHAT, "max_tokens": 1})
    assert one["metrics"]["mean_itl_ms"] is None  # one token: no gap to average
    assert one["metrics"]["generation_time_ms"] == 0
