"""Black-box acceptance tests of the HTTP API: the real ``llmsim serve`` CLI on loopback,
driven with raw HTTP, raw SSE (aiohttp) and the official ``openai`` SDK.

Expected texts are always derived from the request (echo mode) or from an earlier answer of
the same server (seeded random mode); nothing here knows the built-in corpus or tokenizer.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pydantic
import pytest
from conftest import RunningServer, start_server
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from prometheus_client.parser import text_string_to_metric_families

import llmsim

BASE_MODEL = "llmsim/sim-model"  # the --model default, used by shared_server and timed_server
SERVED = ("alpha", "beta")  # served-model-name of random_server; the first is reported
ADAPTER, ADAPTER_PATH = "sqlx", "/adapters/sql"
RANDOM_MAX_MODEL_LEN = 1024
SHARED_MAX_MODEL_LEN = 2048  # set by conftest.shared_server
TTFT, ITL = 0.300, 0.050
HTTP_TIMEOUT = 20.0
MAX_SSE_LINES = 20_000
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
SPEC_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 413: "BadRequestError"}


# -- servers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Random mode, two served names, one adapter with an explicit path, no latency."""
    server = start_server(
        [
            "--mode",
            "random",
            "--served-model-name",
            *SERVED,
            "--lora-modules",
            f"{ADAPTER}={ADAPTER_PATH}",
            "--seed",
            "11",
            "--max-model-len",
            str(RANDOM_MAX_MODEL_LEN),
        ],
        tmp_path_factory.mktemp("api-random"),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def timed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Random mode with a fixed TTFT and ITL (no jitter)."""
    server = start_server(
        [
            "--mode",
            "random",
            "--time-to-first-token",
            f"{int(TTFT * 1000)}ms",
            "--inter-token-latency",
            f"{int(ITL * 1000)}ms",
        ],
        tmp_path_factory.mktemp("api-timed"),
    )
    yield server
    server.stop()


# -- plain HTTP -----------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    server: RunningServer,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | list[Any] | None = None,
) -> Reply:
    """One request on a fresh loopback connection; the whole answer is read and timed."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    headers = {"Connection": "close"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=HTTP_TIMEOUT)
    try:
        started = time.monotonic()
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        elapsed = time.monotonic() - started
        return Reply(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            payload,
            elapsed,
        )
    finally:
        connection.close()


def post_ok(server: RunningServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = call(server, "POST", path, body)
    assert reply.status == 200, (reply.status, reply.body[:500])
    assert reply.headers.get("content-type", "").startswith("application/json")
    payload = reply.json()
    assert isinstance(payload, dict)
    return payload


def assert_error(reply: Reply, status: int, error_type: str | None = None) -> dict[str, Any]:
    """``reply`` is an error with ``status`` in exactly the shape of SPEC section 6."""
    assert reply.status == status, (reply.status, reply.body[:500])
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
    payload = reply.json()
    assert isinstance(payload, dict)
    assert set(payload) == {"error"}, payload
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert "Traceback" not in error["message"]
    assert isinstance(error["type"], str)
    assert error["type"]
    if error_type is not None:
        assert error["type"] == error_type, error
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["code"] == status
    return dict(error)


def messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# -- response checks ------------------------------------------------------------------


def check_usage(usage: dict[str, Any]) -> None:
    assert set(usage) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert usage["prompt_tokens"] >= 1
    assert usage["completion_tokens"] >= 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def check_common(body: dict[str, Any], prefix: str, obj: str, model: str) -> None:
    assert isinstance(body["id"], str)
    assert body["id"].startswith(prefix)
    assert len(body["id"]) > len(prefix)
    assert body["object"] == obj
    assert isinstance(body["created"], int)
    assert abs(body["created"] - time.time()) < 120
    assert body["model"] == model


def check_chat(body: dict[str, Any], model: str, choices: int) -> ChatCompletion:
    """A non-streaming chat completion, validated by the SDK type and by SPEC section 2."""
    parsed = ChatCompletion.model_validate(body)
    check_common(body, "chatcmpl-", "chat.completion", model)
    assert [choice["index"] for choice in body["choices"]] == list(range(choices))
    for choice in body["choices"]:
        assert {"index", "message", "logprobs", "finish_reason", "stop_reason"} <= set(choice)
        assert choice["message"]["role"] == "assistant"
        assert isinstance(choice["message"]["content"], str)
        assert choice["logprobs"] is None
        assert choice["finish_reason"] in ("stop", "length")
        if choice["finish_reason"] == "length":
            assert choice["stop_reason"] is None
    check_usage(body["usage"])
    return parsed


def check_completion(body: dict[str, Any], model: str, choices: int) -> Completion:
    """A non-streaming text completion, validated by the SDK type and by SPEC section 2."""
    parsed = Completion.model_validate(body)
    check_common(body, "cmpl-", "text_completion", model)
    assert [choice["index"] for choice in body["choices"]] == list(range(choices))
    for choice in body["choices"]:
        assert {"index", "text", "logprobs", "finish_reason", "stop_reason"} <= set(choice)
        assert isinstance(choice["text"], str)
        assert choice["logprobs"] is None
        assert choice["finish_reason"] in ("stop", "length")
        if choice["finish_reason"] == "length":
            assert choice["stop_reason"] is None
    check_usage(body["usage"])
    return parsed


def chat_text(body: dict[str, Any], index: int = 0) -> str:
    return str(body["choices"][index]["message"]["content"])


def completion_text(body: dict[str, Any], index: int = 0) -> str:
    return str(body["choices"][index]["text"])


# -- SSE ------------------------------------------------------------------------------


@dataclass
class Stream:
    """A raw SSE answer: every ``data:`` payload with the client-side arrival time."""

    status: int
    content_type: str
    sent_at: float
    events: list[tuple[float, str]] = field(default_factory=list)

    def chunks(self) -> list[dict[str, Any]]:
        assert self.events, "empty stream"
        assert self.events[-1][1] == "[DONE]", self.events[-1][1][:200]
        payloads = [data for _, data in self.events[:-1]]
        assert "[DONE]" not in payloads, "[DONE] is not the last event"
        return [json.loads(data) for data in payloads]

    def times(self) -> list[float]:
        return [at for at, _ in self.events[:-1]]


async def stream_sse(server: RunningServer, path: str, body: dict[str, Any]) -> Stream:
    """POST with aiohttp and parse the SSE by hand: ``data: <payload>`` lines, each followed by
    a blank line. The read is bounded in time (client timeout) and in lines."""
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        sent_at = time.monotonic()
        async with session.post(server.base_url + path, json=body) as response:
            stream = Stream(response.status, response.headers.get("Content-Type", ""), sent_at)
            assert response.status == 200, (response.status, await response.text())
            expect_blank = False
            lines = 0
            async for raw in response.content:
                lines += 1
                assert lines <= MAX_SSE_LINES, "stream did not end"
                line = raw.decode("utf-8").rstrip("\r\n")
                if expect_blank:
                    assert line == "", f"event not followed by a blank line: {line!r}"
                    expect_blank = False
                    continue
                if line == "":
                    continue
                assert line.startswith("data: "), f"not an SSE data line: {line!r}"
                stream.events.append((time.monotonic(), line[len("data: ") :]))
                expect_blank = True
            assert not expect_blank, "last event not terminated by a blank line"
    return stream


def check_sse_headers(stream: Stream) -> None:
    assert stream.status == 200
    assert stream.content_type.startswith("text/event-stream"), stream.content_type


@dataclass
class ChatStreamSummary:
    content: dict[int, list[str]]  # per choice: the streamed content tokens, in order
    finish: dict[int, tuple[str, str | int | None]]  # per choice: finish_reason, stop_reason
    usage: dict[str, Any] | None


def summarise_chat_stream(chunks: list[dict[str, Any]], model: str) -> ChatStreamSummary:
    """Check every chat chunk against the SDK type and the chunk rules of SPEC section 2."""
    shared = {(chunk["id"], chunk["created"], chunk["model"]) for chunk in chunks}
    assert len(shared) == 1, shared  # every chunk shares one id, created and model
    summary = ChatStreamSummary({}, {}, None)
    for position, chunk in enumerate(chunks):
        ChatCompletionChunk.model_validate(chunk)
        check_common(chunk, "chatcmpl-", "chat.completion.chunk", model)
        if not chunk["choices"]:
            assert position == len(chunks) - 1, "usage chunk is not the last before [DONE]"
            check_usage(chunk["usage"])
            summary.usage = chunk["usage"]
            continue
        assert len(chunk["choices"]) == 1
        choice = chunk["choices"][0]
        assert {"index", "delta", "logprobs", "finish_reason"} <= set(choice)
        index = choice["index"]
        assert index not in summary.finish, f"chunk for choice {index} after its finish_reason"
        delta = choice["delta"]
        if index not in summary.content:
            assert delta == {"role": "assistant", "content": ""}, delta
            assert choice["finish_reason"] is None
            summary.content[index] = []
            continue
        assert "role" not in delta
        assert isinstance(delta["content"], str)
        if delta["content"]:
            summary.content[index].append(delta["content"])
        else:
            # only a choice with no output at all sends an empty content chunk (its last)
            assert not summary.content[index]
            assert choice["finish_reason"] is not None
        if choice["finish_reason"] is not None:
            assert choice["finish_reason"] in ("stop", "length")
            summary.finish[index] = (choice["finish_reason"], choice.get("stop_reason"))
    assert set(summary.finish) == set(summary.content), "a choice never finished"
    return summary


@dataclass
class CompletionStreamSummary:
    text: dict[int, list[str]]
    finish: dict[int, tuple[str, str | int | None]]
    usage: dict[str, Any] | None


def summarise_completion_stream(
    chunks: list[dict[str, Any]], model: str
) -> CompletionStreamSummary:
    """Check every text-completion chunk; the SDK type validates chunks that finish a choice
    (its ``CompletionChoice.finish_reason`` does not admit the ``null`` of earlier chunks)."""
    shared = {(chunk["id"], chunk["created"], chunk["model"]) for chunk in chunks}
    assert len(shared) == 1, shared  # every chunk shares one id, created and model
    summary = CompletionStreamSummary({}, {}, None)
    for position, chunk in enumerate(chunks):
        check_common(chunk, "cmpl-", "text_completion", model)
        if not chunk["choices"]:
            assert position == len(chunks) - 1, "usage chunk is not the last before [DONE]"
            check_usage(chunk["usage"])
            summary.usage = chunk["usage"]
            continue
        assert len(chunk["choices"]) == 1
        choice = chunk["choices"][0]
        assert {"index", "text", "logprobs", "finish_reason"} <= set(choice)
        index = choice["index"]
        assert index not in summary.finish, f"chunk for choice {index} after its finish_reason"
        tokens = summary.text.setdefault(index, [])
        assert isinstance(choice["text"], str)
        if choice["text"]:
            tokens.append(choice["text"])
        else:
            assert not tokens
            assert choice["finish_reason"] is not None
        if choice["finish_reason"] is not None:
            Completion.model_validate(chunk)
            assert choice["finish_reason"] in ("stop", "length")
            summary.finish[index] = (choice["finish_reason"], choice.get("stop_reason"))
    assert set(summary.finish) == set(summary.text), "a choice never finished"
    return summary


# -- metrics --------------------------------------------------------------------------


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: RunningServer) -> tuple[Samples, dict[str, str]]:
    reply = call(server, "GET", "/metrics")
    assert reply.status == 200
    assert reply.headers.get("content-type", "").startswith("text/plain"), reply.headers
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, types


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# ======================================================================================
# Endpoints
# ======================================================================================


def test_models_lists_served_names_and_adapter_cards(random_server: RunningServer) -> None:
    reply = call(random_server, "GET", "/v1/models")
    assert reply.status == 200
    listing = reply.json()
    assert listing["object"] == "list"
    cards = listing["data"]
    for card in cards:
        Model.model_validate(card)
        assert card["object"] == "model"
        assert card["owned_by"] == "vllm"
        assert isinstance(card["created"], int)
        assert isinstance(card["permission"], list)
        assert card["permission"]
    by_id = {card["id"]: card for card in cards}
    assert [card["id"] for card in cards] == [*SERVED, ADAPTER]
    for name in SERVED:
        assert by_id[name]["root"] == BASE_MODEL
        assert by_id[name]["parent"] is None
        assert by_id[name]["max_model_len"] == RANDOM_MAX_MODEL_LEN
    assert by_id[ADAPTER]["root"] == ADAPTER_PATH
    assert by_id[ADAPTER]["parent"] == SERVED[0]

    # the same through the SDK
    with make_client(random_server) as client:
        assert [model.id for model in client.models.list()] == [*SERVED, ADAPTER]


def test_models_lists_lora_flag_adapters_with_their_name_as_root(
    shared_server: RunningServer,
) -> None:
    cards = call(shared_server, "GET", "/v1/models").json()["data"]
    for card in cards:
        Model.model_validate(card)
    assert [card["id"] for card in cards] == [BASE_MODEL, "sql-lora", "chat-lora"]
    assert cards[0]["root"] == BASE_MODEL
    assert cards[0]["parent"] is None
    assert cards[0]["max_model_len"] == SHARED_MAX_MODEL_LEN
    for card in cards[1:]:
        assert card["root"] == card["id"]
        assert card["parent"] == BASE_MODEL


def test_every_served_name_alias_and_adapter_is_accepted(random_server: RunningServer) -> None:
    for name in (*SERVED, ADAPTER):
        request = {"model": name, "messages": messages("hello"), "max_tokens": 3}
        check_chat(post_ok(random_server, CHAT, request), model=name, choices=1)
        request = {"model": name, "prompt": "hello", "max_tokens": 3}
        check_completion(post_ok(random_server, COMPLETIONS, request), model=name, choices=1)
    # no model at all: the first served name answers and is reported
    body = post_ok(random_server, CHAT, {"messages": messages("hello"), "max_tokens": 3})
    check_chat(body, model=SERVED[0], choices=1)


def test_health_and_version(shared_server: RunningServer) -> None:
    health = call(shared_server, "GET", "/health")
    assert health.status == 200
    assert health.body == b""
    version = call(shared_server, "GET", "/version")
    assert version.status == 200
    assert version.headers["content-type"].startswith("application/json")
    assert version.json() == {"version": llmsim.__version__}


def test_metrics_are_valid_prometheus_text_and_count_a_request(
    random_server: RunningServer,
) -> None:
    before, types = scrape(random_server)
    expected_types = {
        "vllm:num_requests_running": "gauge",
        "vllm:num_requests_waiting": "gauge",
        "vllm:kv_cache_usage_perc": "gauge",
        "vllm:lora_requests_info": "gauge",
        "vllm:prompt_tokens": "counter",
        "vllm:generation_tokens": "counter",
        "vllm:request_success": "counter",
        "vllm:time_to_first_token_seconds": "histogram",
        "vllm:inter_token_latency_seconds": "histogram",
        "vllm:e2e_request_latency_seconds": "histogram",
        "vllm:request_prompt_tokens": "histogram",
        "vllm:request_generation_tokens": "histogram",
    }
    assert {name: types.get(name) for name in expected_types} == expected_types

    request = {"messages": messages("count me"), "max_tokens": 6, "ignore_eos": True}
    usage = post_ok(random_server, CHAT, request)["usage"]
    labels = {"model_name": SERVED[0], "engine": "0"}

    def deltas() -> tuple[float, float, float]:
        after, _ = scrape(random_server)
        return (
            sample(after, "vllm:prompt_tokens_total", **labels)
            - sample(before, "vllm:prompt_tokens_total", **labels),
            sample(after, "vllm:generation_tokens_total", **labels)
            - sample(before, "vllm:generation_tokens_total", **labels),
            sample(after, "vllm:request_success_total", finished_reason="length", **labels)
            - sample(before, "vllm:request_success_total", finished_reason="length", **labels),
        )

    wanted = (float(usage["prompt_tokens"]), float(usage["completion_tokens"]), 1.0)
    deadline = time.monotonic() + 3.0
    seen = deltas()
    while seen != wanted and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = deltas()
    assert seen == wanted


# ======================================================================================
# Generation
# ======================================================================================


def test_echo_chat_returns_the_last_user_message(shared_server: RunningServer) -> None:
    first, left, right = "an earlier question", "Echo me, ", "exactly as sent."
    conversation = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": first},
        {"role": "assistant", "content": "an earlier answer"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": left},
                {"type": "image_url", "image_url": {"url": "http://127.0.0.1/x.png"}},
                {"type": "text", "text": right},
            ],
        },
    ]
    # max_tokens / ignore_eos do not shorten an echo
    request = {"messages": conversation, "max_tokens": 1, "ignore_eos": True}
    body = post_ok(shared_server, CHAT, request)
    check_chat(body, model=BASE_MODEL, choices=1)
    assert chat_text(body) == left + right
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["stop_reason"] is None


def test_echo_completion_prompt_list_gives_prompt_major_choices(
    shared_server: RunningServer,
) -> None:
    prompts = ["First prompt, short.", "The second one is a little longer!", "3rd"]
    n = 2
    body = post_ok(shared_server, COMPLETIONS, {"prompt": prompts, "n": n, "max_tokens": 2})
    check_completion(body, model=BASE_MODEL, choices=len(prompts) * n)
    for choice in body["choices"]:
        assert choice["text"] == prompts[choice["index"] // n]
        assert choice["finish_reason"] == "stop"
    # usage: each prompt counted once, every choice's output counted
    singles = [
        post_ok(shared_server, COMPLETIONS, {"prompt": prompt})["usage"] for prompt in prompts
    ]
    assert body["usage"]["prompt_tokens"] == sum(u["prompt_tokens"] for u in singles)
    assert body["usage"]["completion_tokens"] == n * sum(u["completion_tokens"] for u in singles)


def test_echo_is_cut_only_by_the_context_window(shared_server: RunningServer) -> None:
    prompt = "lorem ipsum dolor sit amet. " * 180
    body = post_ok(shared_server, COMPLETIONS, {"prompt": prompt})
    check_completion(body, model=BASE_MODEL, choices=1)
    usage = body["usage"]
    assert usage["prompt_tokens"] > SHARED_MAX_MODEL_LEN // 2, "prompt too short for this test"
    assert usage["completion_tokens"] == SHARED_MAX_MODEL_LEN - usage["prompt_tokens"]
    assert body["choices"][0]["finish_reason"] == "length"
    text = completion_text(body)
    assert text
    assert prompt.startswith(text)
    assert len(text) < len(prompt)


def test_random_mode_finish_reason_follows_the_limit(random_server: RunningServer) -> None:
    # max_tokens 1: every choice has exactly one token and reached the limit
    body = post_ok(
        random_server, CHAT, {"messages": messages("one"), "max_tokens": 1, "n": 4, "seed": 3}
    )
    check_chat(body, model=SERVED[0], choices=4)
    assert body["usage"]["completion_tokens"] == 4
    assert {choice["finish_reason"] for choice in body["choices"]} == {"length"}
    assert all(chat_text(body, i) for i in range(4))


async def test_random_stream_choice_lengths_respect_max_tokens(
    random_server: RunningServer,
) -> None:
    max_tokens, n = 12, 8
    request = {
        "messages": messages("tell me things"),
        "max_tokens": max_tokens,
        "n": n,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    summary = summarise_chat_stream(
        (await stream_sse(random_server, CHAT, request)).chunks(), SERVED[0]
    )
    assert sorted(summary.content) == list(range(n))
    for index, tokens in summary.content.items():
        assert 1 <= len(tokens) <= max_tokens
        expected = "length" if len(tokens) == max_tokens else "stop"
        assert summary.finish[index] == (expected, None), (index, tokens)
    assert summary.usage is not None
    assert summary.usage["completion_tokens"] == sum(map(len, summary.content.values()))


def test_ignore_eos_gives_exactly_max_tokens(random_server: RunningServer) -> None:
    for max_tokens in (1, 7, 40):
        request: dict[str, Any] = {
            "messages": messages("go"),
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "n": 2,
        }
        body = post_ok(random_server, CHAT, request)
        check_chat(body, model=SERVED[0], choices=2)
        assert body["usage"]["completion_tokens"] == 2 * max_tokens
        assert [c["finish_reason"] for c in body["choices"]] == ["length", "length"]

        request = {"prompt": ["go", "went"], "max_tokens": max_tokens, "ignore_eos": True}
        body = post_ok(random_server, COMPLETIONS, request)
        check_completion(body, model=SERVED[0], choices=2)
        assert body["usage"]["completion_tokens"] == 2 * max_tokens
        assert [c["finish_reason"] for c in body["choices"]] == ["length", "length"]


def test_without_max_tokens_the_context_window_is_the_limit(random_server: RunningServer) -> None:
    body = post_ok(random_server, CHAT, {"messages": messages("long"), "ignore_eos": True})
    check_chat(body, model=SERVED[0], choices=1)
    usage = body["usage"]
    assert usage["completion_tokens"] == RANDOM_MAX_MODEL_LEN - usage["prompt_tokens"]
    assert body["choices"][0]["finish_reason"] == "length"

    body = post_ok(random_server, CHAT, {"messages": messages("long"), "n": 3})
    check_chat(body, model=SERVED[0], choices=3)
    assert body["usage"]["completion_tokens"] <= 3 * (
        RANDOM_MAX_MODEL_LEN - body["usage"]["prompt_tokens"]
    )


def test_max_completion_tokens_wins_over_max_tokens(random_server: RunningServer) -> None:
    request = {
        "messages": messages("limit"),
        "max_tokens": 20,
        "max_completion_tokens": 5,
        "ignore_eos": True,
    }
    body = post_ok(random_server, CHAT, request)
    assert body["usage"]["completion_tokens"] == 5
    request = {"messages": messages("limit"), "max_completion_tokens": 9, "ignore_eos": True}
    body = post_ok(random_server, CHAT, request)
    check_chat(body, model=SERVED[0], choices=1)
    assert body["usage"]["completion_tokens"] == 9
    assert body["choices"][0]["finish_reason"] == "length"


def test_request_seed_reproduces_text_and_different_seeds_differ(
    random_server: RunningServer,
) -> None:
    def chat(seed: int) -> list[str]:
        request = {
            "messages": messages("seeded"),
            "max_tokens": 40,
            "ignore_eos": True,
            "n": 2,
            "seed": seed,
        }
        body = post_ok(random_server, CHAT, request)
        return [chat_text(body, i) for i in range(2)]

    def completion(seed: int) -> str:
        request = {"prompt": "seeded", "max_tokens": 40, "ignore_eos": True, "seed": seed}
        return completion_text(post_ok(random_server, COMPLETIONS, request))

    first = chat(1234)
    post_ok(random_server, CHAT, {"messages": messages("noise"), "max_tokens": 30})  # interleave
    assert chat(1234) == first
    assert chat(4321) != first
    assert completion(77) == completion(77)
    assert completion(77) != completion(78)


async def test_streamed_text_and_token_count_match_the_non_streamed_answer(
    random_server: RunningServer,
) -> None:
    base = {"messages": messages("same"), "max_tokens": 25, "seed": 99, "n": 2}
    whole = post_ok(random_server, CHAT, base)
    stream = await stream_sse(
        random_server, CHAT, {**base, "stream": True, "stream_options": {"include_usage": True}}
    )
    summary = summarise_chat_stream(stream.chunks(), SERVED[0])
    for index in range(2):
        assert "".join(summary.content[index]) == chat_text(whole, index)
        assert summary.finish[index][0] == whole["choices"][index]["finish_reason"]
    assert summary.usage is not None
    assert summary.usage == whole["usage"]
    assert summary.usage["completion_tokens"] == sum(map(len, summary.content.values()))


async def test_streamed_chunks_carry_one_token_each(shared_server: RunningServer) -> None:
    """The stream's pieces, sent back as a prompt list, count one prompt token each."""
    text = "Tokenization: internationalization, 42 tokens; words & symbols!  Done."
    request = {"prompt": text, "stream": True, "stream_options": {"include_usage": True}}
    summary = summarise_completion_stream(
        (await stream_sse(shared_server, COMPLETIONS, request)).chunks(), BASE_MODEL
    )
    pieces = summary.text[0]
    assert "".join(pieces) == text
    assert summary.usage is not None
    assert summary.usage["completion_tokens"] == len(pieces)
    counted = post_ok(shared_server, COMPLETIONS, {"prompt": pieces})
    assert counted["usage"]["prompt_tokens"] == len(pieces)


def _two_distinct_stops(text: str) -> tuple[str, str]:
    words = [word.strip(".,;:!?") for word in text.split()]
    words = [word for word in words if len(word) >= 3]
    assert len(words) >= 4, text
    early, late = words[1], words[-1]
    if text.find(early) == text.find(late):
        late = next(w for w in reversed(words) if text.find(w) != text.find(early))
    return early, late


async def test_stop_string_and_list_cut_random_output(random_server: RunningServer) -> None:
    base = {"messages": messages("stop me"), "max_tokens": 40, "ignore_eos": True, "seed": 5}
    full = chat_text(post_ok(random_server, CHAT, base))
    early, late = _two_distinct_stops(full)

    body = post_ok(random_server, CHAT, {**base, "stop": late})
    check_chat(body, model=SERVED[0], choices=1)
    assert chat_text(body) == full[: full.find(late)]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["stop_reason"] == late

    stops = ["\u2603never-in-output\u2603", late, early]
    first = min((s for s in stops if s in full), key=full.find)
    body = post_ok(random_server, CHAT, {**base, "stop": stops})
    check_chat(body, model=SERVED[0], choices=1)
    assert chat_text(body) == full[: full.find(first)]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["stop_reason"] == first

    # a stop string that never occurs leaves the answer alone
    body = post_ok(random_server, CHAT, {**base, "stop": ["\u2603never\u2603"]})
    assert chat_text(body) == full
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["stop_reason"] is None

    # the same cut in a stream: the pieces join to the cut text, the last one carries the stop
    stream = await stream_sse(
        random_server,
        CHAT,
        {**base, "stop": stops, "stream": True, "stream_options": {"include_usage": True}},
    )
    summary = summarise_chat_stream(stream.chunks(), SERVED[0])
    assert "".join(summary.content[0]) == full[: full.find(first)]
    assert summary.finish[0] == ("stop", first)
    assert summary.usage is not None
    assert summary.usage["completion_tokens"] == len(summary.content[0])


async def test_stop_string_in_echo_completion_and_its_stream(shared_server: RunningServer) -> None:
    prompt = "The quick brown fox. Jumps over the lazy dog."
    stops = [". J", "fox", "absent!"]
    first = min((s for s in stops if s in prompt), key=prompt.find)
    expected = prompt[: prompt.find(first)]

    body = post_ok(shared_server, COMPLETIONS, {"prompt": prompt, "stop": stops})
    check_completion(body, model=BASE_MODEL, choices=1)
    assert completion_text(body) == expected
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["stop_reason"] == first

    request = {
        "prompt": prompt,
        "stop": stops,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    summary = summarise_completion_stream(
        (await stream_sse(shared_server, COMPLETIONS, request)).chunks(), BASE_MODEL
    )
    assert "".join(summary.text[0]) == expected
    assert summary.finish[0] == ("stop", first)
    assert summary.usage is not None
    assert summary.usage == body["usage"]
    assert summary.usage["completion_tokens"] == len(summary.text[0])

    # a stop string at the very start leaves nothing: empty text, finish_reason stop
    body = post_ok(shared_server, COMPLETIONS, {"prompt": prompt, "stop": prompt[:3]})
    assert completion_text(body) == ""
    assert body["usage"]["completion_tokens"] == 0
    assert (body["choices"][0]["finish_reason"], body["choices"][0]["stop_reason"]) == (
        "stop",
        prompt[:3],
    )


# ======================================================================================
# Streaming
# ======================================================================================


async def test_raw_sse_chat_stream_with_usage(shared_server: RunningServer) -> None:
    text = "Stream this sentence back, token by token."
    base = {"messages": messages(text), "n": 2}
    whole = post_ok(shared_server, CHAT, base)
    stream = await stream_sse(
        shared_server, CHAT, {**base, "stream": True, "stream_options": {"include_usage": True}}
    )
    check_sse_headers(stream)
    chunks = stream.chunks()
    summary = summarise_chat_stream(chunks, BASE_MODEL)
    assert chunks[-1]["choices"] == []
    assert sorted(summary.content) == [0, 1]
    for index in (0, 1):
        assert "".join(summary.content[index]) == text
        assert summary.finish[index] == ("stop", None)
    assert summary.usage is not None
    assert summary.usage == whole["usage"]
    assert summary.usage["completion_tokens"] == sum(map(len, summary.content.values()))


async def test_raw_sse_stream_without_include_usage_has_no_usage_chunk(
    shared_server: RunningServer,
) -> None:
    for path, body in (
        (CHAT, {"messages": messages("no usage please"), "stream": True}),
        (COMPLETIONS, {"prompt": ["no usage", "please"], "stream": True}),
        (CHAT, {"messages": messages("no usage"), "stream": True, "stream_options": {}}),
    ):
        stream = await stream_sse(shared_server, path, body)
        check_sse_headers(stream)
        chunks = stream.chunks()
        assert chunks
        assert all(chunk["choices"] for chunk in chunks)
        assert all(chunk.get("usage") is None for chunk in chunks)


async def test_continuous_usage_stats_gives_every_chunk_its_choices_usage_so_far(
    shared_server: RunningServer,
) -> None:
    both = {"include_usage": True, "continuous_usage_stats": True}
    for path, body in (
        (CHAT, {"messages": messages("count me as I go"), "n": 2}),
        (COMPLETIONS, {"prompt": ["count me", "as I go"]}),
    ):
        request = {**body, "stream": True, "stream_options": both}
        chunks = (await stream_sse(shared_server, path, request)).chunks()
        final = chunks[-1]["usage"]
        sent: dict[int, int] = {}
        for chunk in chunks[:-1]:
            (choice,) = chunk["choices"]
            index = choice["index"]
            if choice.get("text") or (choice.get("delta") or {}).get("content"):
                sent[index] = sent.get(index, 0) + 1
            usage = chunk["usage"]
            assert usage["completion_tokens"] == sent.get(index, 0), chunk
            assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert sum(sent.values()) == final["completion_tokens"]
    # without include_usage, continuous_usage_stats adds nothing (as in vLLM)
    alone = {"messages": messages("no usage"), "stream": True}
    alone["stream_options"] = {"continuous_usage_stats": True}
    chunks = (await stream_sse(shared_server, CHAT, alone)).chunks()
    assert all(chunk.get("usage") is None for chunk in chunks)


async def test_enable_force_include_usage_ends_every_stream_with_usage(tmp_path: Path) -> None:
    server = start_server([BASE_MODEL, "--enable-force-include-usage"], tmp_path)
    try:
        for path, body in (
            (CHAT, {"messages": messages("usage unasked"), "stream": True}),
            (COMPLETIONS, {"prompt": "usage unasked", "stream": True, "stream_options": {}}),
        ):
            chunks = (await stream_sse(server, path, body)).chunks()
            assert chunks[-1]["choices"] == []
            usage = chunks[-1]["usage"]
            assert usage["completion_tokens"] > 0
            assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
            assert all(chunk.get("usage") is None for chunk in chunks[:-1])
    finally:
        server.stop()


async def test_raw_sse_completion_stream_of_a_prompt_list(shared_server: RunningServer) -> None:
    prompts = ["alpha beta gamma", "delta, epsilon!"]
    n = 2
    request = {
        "prompt": prompts,
        "n": n,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    stream = await stream_sse(shared_server, COMPLETIONS, request)
    check_sse_headers(stream)
    summary = summarise_completion_stream(stream.chunks(), BASE_MODEL)
    assert sorted(summary.text) == list(range(len(prompts) * n))
    for index, tokens in summary.text.items():
        assert "".join(tokens) == prompts[index // n]
        assert summary.finish[index] == ("stop", None)
    whole = post_ok(shared_server, COMPLETIONS, {"prompt": prompts, "n": n})
    assert summary.usage is not None
    assert summary.usage == whole["usage"]
    assert summary.usage["completion_tokens"] == sum(map(len, summary.text.values()))


# ======================================================================================
# Timing
# ======================================================================================


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_stream_first_token_after_ttft_then_itl_gaps(
    timed_server: RunningServer, path: str
) -> None:
    tokens, n = 12, 2
    request: dict[str, Any] = {"max_tokens": tokens, "ignore_eos": True, "n": n, "stream": True}
    if path == CHAT:
        request["messages"] = messages("timed")
    else:
        request["prompt"] = "timed"
    stream = await stream_sse(timed_server, path, request)
    arrivals: dict[int, list[float]] = {}
    for at, chunk in zip(stream.times(), stream.chunks(), strict=True):
        choice = chunk["choices"][0]
        piece = choice["delta"].get("content") if path == CHAT else choice["text"]
        if piece:
            arrivals.setdefault(choice["index"], []).append(at)
    assert sorted(arrivals) == list(range(n))
    for index, content_times in arrivals.items():
        assert len(content_times) == tokens, index
        first = content_times[0] - stream.sent_at
        assert first >= 0.9 * TTFT, f"choice {index}: first token after {first:.3f}s"
        assert first < 3 * TTFT, f"choice {index}: first token after {first:.3f}s"
        gaps = [b - a for a, b in itertools.pairwise(content_times)]
        mean_gap = statistics.mean(gaps)
        assert 0.8 * ITL <= mean_gap <= 2 * ITL, f"choice {index}: mean gap {mean_gap:.4f}s {gaps}"


@pytest.mark.parametrize("tokens", [1, 10])
def test_non_streaming_answer_takes_ttft_plus_itl_per_token(
    timed_server: RunningServer, tokens: int
) -> None:
    """k tokens take TTFT + ITL×(k−1); choices and prompts of one request run side by side,
    so several sequences take as long as the slowest, not the sum."""
    expected = TTFT + ITL * (tokens - 1)
    limits = {"max_tokens": tokens, "ignore_eos": True}
    for path, request, sequences in (
        (CHAT, {"messages": messages("timed"), **limits}, 1),
        (COMPLETIONS, {"prompt": "timed", **limits}, 1),
        (CHAT, {"messages": messages("timed"), "n": 3, **limits}, 3),
        (COMPLETIONS, {"prompt": ["timed", "twice"], "n": 2, **limits}, 4),
    ):
        reply = call(timed_server, "POST", path, request)
        assert reply.status == 200, reply.body[:300]
        assert reply.json()["usage"]["completion_tokens"] == tokens * sequences
        assert reply.elapsed >= 0.9 * expected, f"{path}: {reply.elapsed:.3f}s < {expected}"
        assert reply.elapsed < 3 * expected, f"{path}: {reply.elapsed:.3f}s vs {expected}"


# ======================================================================================
# Errors
# ======================================================================================


def test_unknown_model_is_404_with_the_spec_message(random_server: RunningServer) -> None:
    name = "no-such-model"
    for path, request in (
        (CHAT, {"model": name, "messages": messages("x")}),
        (CHAT, {"model": name, "messages": messages("x"), "stream": True}),
        (COMPLETIONS, {"model": name, "prompt": "x"}),
        (COMPLETIONS, {"model": BASE_MODEL, "prompt": "x"}),  # --model is not a served name
    ):
        error = assert_error(call(random_server, "POST", path, request), 404, "NotFoundError")
        assert error["message"] == f"The model `{request['model']}` does not exist."


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (CHAT, {"model": SERVED[0]}, "messages"),
        (CHAT, {"messages": []}, "messages"),
        (CHAT, {"messages": "hello"}, "messages"),
        (CHAT, {"messages": [{"content": "x"}]}, "messages[0].role"),
        (CHAT, {"messages": messages("x"), "max_tokens": "abc"}, "max_tokens"),
        (CHAT, {"messages": messages("x"), "max_tokens": 0}, "max_tokens"),
        (CHAT, {"messages": messages("x"), "max_completion_tokens": -1}, "max_completion_tokens"),
        (CHAT, {"messages": messages("x"), "n": 0}, "n"),
        (CHAT, {"messages": messages("x"), "temperature": -1}, "temperature"),
        (CHAT, {"messages": messages("x"), "top_p": 1.5}, "top_p"),
        (CHAT, {"messages": messages("x"), "stream": "yes"}, "stream"),
        (CHAT, {"messages": messages("x"), "stop": 5}, "stop"),
        (CHAT, {"messages": messages("x"), "seed": "seven"}, "seed"),
        (CHAT, {"messages": messages("x"), "max_tokens": 10 * RANDOM_MAX_MODEL_LEN}, None),
        (COMPLETIONS, {"model": SERVED[0]}, "prompt"),
        (COMPLETIONS, {"prompt": 12.5}, "prompt"),
        (COMPLETIONS, {"prompt": "x", "n": 0}, "n"),
        (COMPLETIONS, {"prompt": "x", "max_tokens": "abc"}, "max_tokens"),
        (COMPLETIONS, {"prompt": "x", "presence_penalty": 3}, "presence_penalty"),
    ],
)
def test_invalid_request_is_400_naming_the_field(
    random_server: RunningServer, path: str, body: dict[str, Any], param: str | None
) -> None:
    error = assert_error(call(random_server, "POST", path, body), 400, "BadRequestError")
    if param is not None:
        assert error["param"] == param, error
        assert param.split("[")[0] in error["message"], error


def test_context_length_overflow_is_400_that_says_so(shared_server: RunningServer) -> None:
    too_long = {"prompt": "word " * (SHARED_MAX_MODEL_LEN + 100), "max_tokens": 1}
    error = assert_error(call(shared_server, "POST", COMPLETIONS, too_long), 400)
    assert "context length" in error["message"]
    assert str(SHARED_MAX_MODEL_LEN) in error["message"]
    request = {"messages": messages("x"), "max_tokens": SHARED_MAX_MODEL_LEN}
    error = assert_error(call(shared_server, "POST", CHAT, request), 400)
    assert "context length" in error["message"]
    assert str(SHARED_MAX_MODEL_LEN) in error["message"]


@pytest.mark.parametrize(
    "raw",
    [b'{"messages": [', b"not json at all", b'{"messages": [], }', b"", b"\xff\xfe{}"],
)
def test_malformed_json_is_400(random_server: RunningServer, raw: bytes) -> None:
    for path in (CHAT, COMPLETIONS):
        assert_error(call(random_server, "POST", path, raw), 400, "BadRequestError")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", CHAT),
        ("GET", COMPLETIONS),
        ("PUT", CHAT),
        ("POST", "/v1/models"),
        ("POST", "/health"),
        ("DELETE", "/version"),
    ],
)
def test_wrong_method_is_405(random_server: RunningServer, method: str, path: str) -> None:
    reply = call(random_server, method, path)
    assert_error(reply, 405)
    assert reply.headers.get("allow"), reply.headers
    assert method not in reply.headers["allow"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v2/foo"), ("POST", "/v1/chat/completion"), ("GET", "/v1/models/extra")],
)
def test_unknown_path_is_404(random_server: RunningServer, method: str, path: str) -> None:
    body = {"messages": messages("x")} if method == "POST" else None
    assert_error(call(random_server, method, path, body), 404, "NotFoundError")


async def test_odd_requests_never_give_500(random_server: RunningServer) -> None:
    deep = b"[" * 5000 + b"]" * 5000
    bodies: list[tuple[str, bytes]] = [
        (CHAT, b"null"),
        (CHAT, b'"a string"'),
        (CHAT, b"[1, 2, 3]"),
        (CHAT, deep),
        (CHAT, b'{"messages": ' + deep + b"}"),
        (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": NaN}'),
        (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "seed": 1e400}'),
        (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "n": 99999999999999999999}'),
        (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "seed": 36893488147419103232}'),
        (CHAT, b'{"messages": [{"role": "bogus", "content": "x"}]}'),
        (CHAT, b'{"messages": [{"role": "user", "content": [{"type": "text"}]}]}'),
        (CHAT, b'{"messages": [{"role": "user", "content": 5}]}'),
        (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "logit_bias": "x"}'),
        (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "stream_options": {}}'),
        (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "stop": [1, 2]}'),
        (CHAT, b'{"messages": [{"role": "user", "content": "\\ud800"}], "max_tokens": "1"}'),
        (COMPLETIONS, b'{"prompt": []}'),
        (COMPLETIONS, b'{"prompt": [[]]}'),
        (COMPLETIONS, b'{"prompt": [1, "a"]}'),
        (COMPLETIONS, b'{"prompt": [-1]}'),
        (COMPLETIONS, b'{"prompt": {"text": "x"}}'),
        (COMPLETIONS, b'{"prompt": "x", "model": 7}'),
        (COMPLETIONS, b'{"prompt": "x", "stop": ' + json.dumps(["s"] * 200).encode() + b"}"),
    ]
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    headers = {"Content-Type": "application/json"}

    async def send(session: aiohttp.ClientSession, path: str, data: bytes) -> Reply:
        async with session.post(random_server.base_url + path, data=data, headers=headers) as r:
            payload = await r.read()
            return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, payload, 0.0)

    async with aiohttp.ClientSession(timeout=timeout) as session:
        replies = await asyncio.gather(*(send(session, path, data) for path, data in bodies))
    for (path, data), reply in zip(bodies, replies, strict=True):
        assert 400 <= reply.status < 500, (path, data[:80], reply.status, reply.body[:300])
        assert_error(reply, reply.status, SPEC_ERROR_TYPES.get(reply.status))
    assert call(random_server, "GET", "/health").status == 200


# ======================================================================================
# The official openai SDK
# ======================================================================================


def make_client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_url, api_key="x", max_retries=0, timeout=HTTP_TIMEOUT)


def make_async_client(server: RunningServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=server.api_url, api_key="x", max_retries=0, timeout=HTTP_TIMEOUT
    )


def test_sdk_validation_is_strict_enough_to_catch_a_missing_field(
    shared_server: RunningServer,
) -> None:
    """Control: the SDK types used below do reject a body that lacks a required field."""
    body = post_ok(shared_server, CHAT, {"messages": messages("control")})
    ChatCompletion.model_validate(body)
    for missing in ("id", "created", "choices"):
        with pytest.raises(pydantic.ValidationError):
            ChatCompletion.model_validate({k: v for k, v in body.items() if k != missing})
    broken = json.loads(json.dumps(body))
    del broken["choices"][0]["finish_reason"]
    with pytest.raises(pydantic.ValidationError):
        ChatCompletion.model_validate(broken)
    text = post_ok(shared_server, COMPLETIONS, {"prompt": "control"})
    Completion.model_validate(text)
    with pytest.raises(pydantic.ValidationError):
        Completion.model_validate({k: v for k, v in text.items() if k != "model"})


def test_sdk_chat_non_streaming(shared_server: RunningServer) -> None:
    client = make_client(shared_server)
    text = "What does the SDK see?"
    raw = client.chat.completions.with_raw_response.create(
        model=BASE_MODEL,
        messages=[{"role": "user", "content": text}],
        n=2,
        temperature=0.7,
        top_p=0.9,
        presence_penalty=0.1,
        user="tester",
        seed=3,
    )
    assert raw.http_response.status_code == 200
    validated = check_chat(raw.http_response.json(), model=BASE_MODEL, choices=2)
    parsed = raw.parse()
    assert isinstance(parsed, ChatCompletion)
    assert parsed == validated
    assert [choice.message.content for choice in parsed.choices] == [text, text]
    assert parsed.usage is not None
    assert parsed.usage.total_tokens == parsed.usage.prompt_tokens + parsed.usage.completion_tokens


def test_sdk_chat_streaming(shared_server: RunningServer) -> None:
    client = make_client(shared_server)
    text = "Streaming through the official client."
    stream = client.chat.completions.create(
        model="chat-lora",
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = []
    for chunk in stream:
        assert isinstance(chunk, ChatCompletionChunk)
        chunks.append(ChatCompletionChunk.model_validate(chunk.to_dict()))
        assert len(chunks) < 1000
    assert chunks
    summary = summarise_chat_stream([c.to_dict() for c in chunks], "chat-lora")
    assert "".join(summary.content[0]) == text
    assert summary.finish[0] == ("stop", None)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(summary.content[0])


def test_sdk_completions_non_streaming(shared_server: RunningServer) -> None:
    client = make_client(shared_server)
    prompts = ["one prompt", "another prompt"]
    raw = client.completions.with_raw_response.create(
        model="sql-lora", prompt=prompts, n=2, max_tokens=4
    )
    validated = check_completion(raw.http_response.json(), model="sql-lora", choices=4)
    parsed = raw.parse()
    assert parsed == validated
    assert [choice.text for choice in parsed.choices] == [p for p in prompts for _ in range(2)]


async def test_async_sdk_chat_and_completions(shared_server: RunningServer) -> None:
    client = make_async_client(shared_server)
    try:
        text = "Async chat answer."
        raw = await client.chat.completions.with_raw_response.create(
            model=BASE_MODEL, messages=[{"role": "user", "content": text}]
        )
        chat = check_chat(raw.http_response.json(), model=BASE_MODEL, choices=1)
        assert chat.choices[0].message.content == text

        prompt = "Async completion, streamed."
        stream = await client.completions.create(
            model=BASE_MODEL,
            prompt=prompt,
            stream=True,
            stream_options={"include_usage": True},
        )
        dicts: list[dict[str, Any]] = []
        async for chunk in stream:
            assert isinstance(chunk, Completion)
            dicts.append(chunk.to_dict())
            assert len(dicts) < 1000
        summary = summarise_completion_stream(dicts, BASE_MODEL)
        assert "".join(summary.text[0]) == prompt
        assert summary.usage is not None
        assert summary.usage["completion_tokens"] == len(summary.text[0])

        achat = await client.chat.completions.create(
            model=BASE_MODEL, messages=[{"role": "user", "content": text}], stream=True
        )
        pieces: list[str] = []
        async for piece in achat:
            ChatCompletionChunk.model_validate(piece.to_dict())
            pieces.extend(c.delta.content or "" for c in piece.choices)
            assert len(pieces) < 1000
        assert "".join(pieces) == text

        raw_completion = await client.completions.with_raw_response.create(
            model=BASE_MODEL, prompt=prompt
        )
        done = check_completion(raw_completion.http_response.json(), BASE_MODEL, choices=1)
        assert done.choices[0].text == prompt
    finally:
        await client.close()


def _expect_sdk_error(
    action: Callable[[], object], error: type[openai.APIStatusError], status: int
) -> openai.APIStatusError:
    with pytest.raises(error) as caught:
        action()
    assert caught.value.status_code == status
    return caught.value


def test_sdk_errors_map_to_the_right_exceptions(random_server: RunningServer) -> None:
    client = make_client(random_server)
    hi = [{"role": "user", "content": "hi"}]
    missing = _expect_sdk_error(
        lambda: client.chat.completions.create(model="ghost", messages=hi),  # type: ignore[arg-type]
        openai.NotFoundError,
        404,
    )
    assert missing.param == "model"
    assert missing.type == "NotFoundError"
    _expect_sdk_error(
        lambda: client.completions.create(model="ghost", prompt="x", stream=True),
        openai.NotFoundError,
        404,
    )
    bad = _expect_sdk_error(
        lambda: client.chat.completions.create(model=SERVED[0], messages=hi, n=0),  # type: ignore[arg-type]
        openai.BadRequestError,
        400,
    )
    assert bad.param == "n"
    bad = _expect_sdk_error(
        lambda: client.completions.create(model=SERVED[1], prompt="x", temperature=-1),
        openai.BadRequestError,
        400,
    )
    assert bad.param == "temperature"


async def test_async_sdk_not_found(random_server: RunningServer) -> None:
    client = make_async_client(random_server)
    try:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.completions.create(model="ghost", prompt="x")
        assert caught.value.status_code == 404
        assert caught.value.param == "model"
    finally:
        await client.close()
