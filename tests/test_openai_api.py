"""The OpenAI-compatible API from outside: the real CLI, the official SDK, raw HTTP and SSE.

Every response is validated against the openai SDK's own pydantic types, so a missing or
mistyped field fails here before it fails in a user's client.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from conftest import RunningServer, start_server
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from prometheus_client.parser import text_string_to_metric_families

from llmsim import __version__
from llmsim.engine.tokenizer import count_tokens, tokenize

MODEL = "llmsim/sim-model"
HI = [{"role": "user", "content": "Say something about load balancers."}]


# -- servers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(
        [
            "--mode",
            "random",
            "--served-model-name",
            "primary-name",
            "--served-model-name",
            "alias-name",
            "--lora-modules",
            "sql-lora=/adapters/sql",
            "--seed",
            "11",
        ],
        tmp_path_factory.mktemp("random"),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def timed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(
        ["--time-to-first-token", "300ms", "--inter-token-latency", "50ms"],
        tmp_path_factory.mktemp("timed"),
    )
    yield server
    server.stop()


def sdk(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_url, api_key="unused", max_retries=0, timeout=30)


def post(server: RunningServer, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        server.base_url + path, data=data, headers={"Content-Type": "application/json"}
    )
    return _send(request)


def _send(request: urllib.request.Request) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def assert_error(status: int, body: dict[str, Any], expected: int, type_: str) -> dict[str, Any]:
    assert status == expected, body
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type_
    assert error["code"] == expected
    assert isinstance(error["message"], str)
    assert error["message"]
    return dict(error)


# -- models, health, version, metrics -------------------------------------------------


def test_models_list_base_names_and_adapter_cards(random_server: RunningServer) -> None:
    models = list(sdk(random_server).models.list())
    for card in models:
        Model.model_validate(card.model_dump())
    by_id = {card.id: card.model_dump() for card in models}
    assert next(iter(by_id)) == "primary-name"
    assert {"primary-name", "sql-lora"} <= set(by_id)
    base, adapter = by_id["primary-name"], by_id["sql-lora"]
    assert base["owned_by"] == "vllm"
    assert base["root"] == MODEL
    assert base["parent"] is None
    assert base["max_model_len"] == 4096
    assert adapter["root"] == "/adapters/sql"
    assert adapter["parent"] == "primary-name"


def test_served_model_name_aliases_are_accepted(random_server: RunningServer) -> None:
    client = sdk(random_server)
    for name in ("primary-name", "alias-name"):
        answer = client.chat.completions.create(model=name, messages=HI, max_tokens=3)  # type: ignore[arg-type]
        assert answer.model == name


def test_health_version_and_metrics(random_server: RunningServer) -> None:
    with urllib.request.urlopen(random_server.base_url + "/health", timeout=10) as response:
        assert response.status == 200
        assert response.read() == b""
    with urllib.request.urlopen(random_server.base_url + "/version", timeout=10) as response:
        assert json.loads(response.read()) == {"version": __version__}
    with urllib.request.urlopen(random_server.base_url + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:lora_requests_info",
    ):
        assert families[name].type == "gauge"
    assert families["vllm:generation_tokens"].type == "counter"
    assert families["vllm:time_to_first_token_seconds"].type == "histogram"
    [running] = families["vllm:num_requests_running"].samples
    assert running.labels == {"model_name": "primary-name", "engine": "0"}


# -- chat and completions through the SDK ---------------------------------------------


def test_chat_completion_matches_the_sdk_types(random_server: RunningServer) -> None:
    answer = sdk(random_server).chat.completions.create(
        model="primary-name",
        messages=HI,  # type: ignore[arg-type]
        max_tokens=12,
        extra_body={"ignore_eos": True},
    )
    ChatCompletion.model_validate(answer.model_dump())
    assert answer.id.startswith("chatcmpl-")
    assert answer.object == "chat.completion"
    [choice] = answer.choices
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "length"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 12
    assert count_tokens(choice.message.content or "") == 12
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 12


def test_streamed_chat_matches_the_sdk_types_and_usage(random_server: RunningServer) -> None:
    stream = sdk(random_server).chat.completions.create(
        model="primary-name",
        messages=HI,  # type: ignore[arg-type]
        max_tokens=9,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk.model_dump())
    assert len({chunk.id for chunk in chunks}) == 1
    *choice_chunks, usage_chunk = chunks
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    first = choice_chunks[0].choices[0].delta
    assert first.role == "assistant"
    assert first.content == ""
    contents = [c.choices[0].delta.content for c in choice_chunks[1:]]
    assert len(contents) == usage_chunk.usage.completion_tokens == 9
    assert all(contents)
    assert [c.choices[0].finish_reason for c in choice_chunks[1:]] == [None] * 8 + ["length"]


def test_text_completion_with_prompt_list_and_n(random_server: RunningServer) -> None:
    answer = sdk(random_server).completions.create(
        model="primary-name", prompt=["first prompt", "second prompt here"], n=2, max_tokens=5
    )
    Completion.model_validate(answer.model_dump())
    assert answer.id.startswith("cmpl-")
    assert [choice.index for choice in answer.choices] == [0, 1, 2, 3]
    assert answer.usage is not None
    produced = sum(count_tokens(choice.text) for choice in answer.choices)
    assert answer.usage.completion_tokens == produced
    assert answer.usage.prompt_tokens == count_tokens("first prompt") + count_tokens(
        "second prompt here"
    )
    for choice in answer.choices:
        assert count_tokens(choice.text) <= 5
        assert choice.finish_reason == ("length" if count_tokens(choice.text) == 5 else "stop")


async def test_streamed_completion_with_the_async_sdk(random_server: RunningServer) -> None:
    client = openai.AsyncOpenAI(base_url=random_server.api_url, api_key="x", max_retries=0)
    stream = await client.completions.create(
        model="primary-name", prompt="Once upon a time", max_tokens=6, stream=True,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    chunks = [chunk async for chunk in stream]
    await client.close()
    # The SDK types a completion chunk as a Completion, whose finish_reason may not be null;
    # vLLM (and llmsim) send null until the last chunk, so only that one validates as is.
    Completion.model_validate(chunks[-1].model_dump())
    for chunk in chunks[:-1]:
        data = chunk.model_dump()
        assert data["choices"][0]["finish_reason"] is None
        data["choices"][0]["finish_reason"] = "length"
        Completion.model_validate(data)
    assert len(chunks) == 6
    assert [chunk.choices[0].finish_reason for chunk in chunks][-1] == "length"
    assert all(chunk.object == "text_completion" for chunk in chunks)


def test_max_completion_tokens_wins_over_max_tokens(random_server: RunningServer) -> None:
    answer = sdk(random_server).chat.completions.create(
        model="primary-name",
        messages=HI,  # type: ignore[arg-type]
        max_tokens=20,
        max_completion_tokens=4,
        extra_body={"ignore_eos": True},
    )
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 4


def test_request_seed_reproduces_the_text(random_server: RunningServer) -> None:
    client = sdk(random_server)

    def text(seed: int) -> str:
        answer = client.completions.create(
            model="primary-name", prompt="x", max_tokens=40, seed=seed
        )
        return answer.choices[0].text

    assert text(1) == text(1)
    assert len({text(seed) for seed in range(2, 7)}) > 1


def test_stop_string_cuts_before_the_match(random_server: RunningServer) -> None:
    client = sdk(random_server)
    free = (
        client.completions.create(
            model="primary-name", prompt="x", max_tokens=60, seed=3, extra_body={"ignore_eos": True}
        )
        .choices[0]
        .text
    )
    words = free.split()
    stop = words[len(words) // 2]
    cut = client.completions.create(
        model="primary-name",
        prompt="x",
        max_tokens=60,
        seed=3,
        stop=[stop, "never-in-the-text"],
        extra_body={"ignore_eos": True},
    ).choices[0]
    assert cut.finish_reason == "stop"
    assert cut.stop_reason == stop  # type: ignore[attr-defined]
    assert cut.text == free[: free.find(stop)]


def test_echo_mode_returns_the_last_user_message_and_the_prompt(tmp_path: Path) -> None:
    server = start_server(["--mode", "echo"], tmp_path)
    try:
        client = sdk(server)
        messages = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": [{"type": "text", "text": "echo this, please."}]},
        ]
        chat = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1)  # type: ignore[arg-type]
        assert chat.choices[0].message.content == "echo this, please."
        assert chat.choices[0].finish_reason == "stop"
        assert chat.usage is not None
        assert chat.usage.completion_tokens == len(tokenize("echo this, please."))
        text = client.completions.create(model=MODEL, prompt="repeat me exactly", max_tokens=1)
        assert text.choices[0].text == "repeat me exactly"
    finally:
        assert server.stop() == 0


# -- raw SSE -----------------------------------------------------------------------------


async def read_sse(url: str, body: dict[str, Any]) -> tuple[list[bytes], list[float], float]:
    """Events' data and their arrival times, and the time the request was sent."""
    events: list[bytes] = []
    times: list[float] = []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        sent = time.monotonic()
        async with session.post(url, json=body) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            async for line in response.content:
                if line.startswith(b"data: "):
                    events.append(line[len(b"data: ") :].rstrip(b"\n"))
                    times.append(time.monotonic())
                else:
                    assert line == b"\n", line
    return events, times, sent


async def test_raw_sse_stream_shape(random_server: RunningServer) -> None:
    body = {
        "model": "primary-name",
        "messages": HI,
        "max_tokens": 7,
        "ignore_eos": True,
        "stream": True,
        "n": 2,
    }
    events, _, _ = await read_sse(random_server.api_url + "/chat/completions", body)
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    by_index: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    for chunk in chunks:
        [choice] = chunk["choices"]
        by_index[choice["index"]].append(choice)
    for choices in by_index.values():
        assert choices[0]["delta"] == {"role": "assistant", "content": ""}
        assert len(choices) == 1 + 7
        assert [c["finish_reason"] for c in choices[1:]] == [None] * 6 + ["length"]


# -- timing -------------------------------------------------------------------------------


async def test_streamed_tokens_follow_ttft_then_itl(timed_server: RunningServer) -> None:
    body = {"messages": HI, "max_tokens": 12, "ignore_eos": True, "stream": True}
    _events, times, sent = await read_sse(timed_server.api_url + "/chat/completions", body)
    # events: role chunk + first token arrive together, then one event per token, then [DONE]
    token_times = times[1:-1]
    assert len(token_times) == 12
    ttft = token_times[0] - sent
    assert 0.9 * 0.3 <= ttft < 3 * 0.3
    gaps = [b - a for a, b in itertools.pairwise(token_times)]
    assert 0.8 * 0.05 <= statistics.mean(gaps) < 2 * 0.05


def test_non_streaming_answer_takes_ttft_plus_itl_per_token(timed_server: RunningServer) -> None:
    tokens = 9
    expected = 0.3 + 0.05 * (tokens - 1)
    started = time.monotonic()
    status, body = post(
        timed_server,
        "/v1/completions",
        {"prompt": "time me", "max_tokens": tokens, "ignore_eos": True},
    )
    elapsed = time.monotonic() - started
    assert status == 200
    assert body["usage"]["completion_tokens"] == tokens
    assert 0.9 * expected <= elapsed < 3 * expected


# -- errors -------------------------------------------------------------------------------


def test_unknown_model_is_404_in_the_sdk_and_on_the_wire(random_server: RunningServer) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(random_server).chat.completions.create(model="no-such-model", messages=HI)  # type: ignore[arg-type]
    assert caught.value.status_code == 404
    status, body = post(random_server, "/v1/completions", {"model": "no-such-model", "prompt": "x"})
    error = assert_error(status, body, 404, "NotFoundError")
    assert error["message"] == "The model `no-such-model` does not exist."


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"max_tokens": 3}, "messages"),
        ("/v1/chat/completions", {"messages": HI, "max_tokens": "abc"}, "max_tokens"),
        ("/v1/chat/completions", {"messages": HI, "n": 0}, "n"),
        ("/v1/chat/completions", {"messages": HI, "temperature": -1}, "temperature"),
        ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "messages"),
        ("/v1/completions", {"prompt": 17}, "prompt"),
        ("/v1/completions", {"prompt": "x", "stop": 5}, "stop"),
        ("/v1/completions", {"prompt": "x", "top_p": 2}, "top_p"),
    ],
)
def test_invalid_fields_are_400_naming_the_field(
    random_server: RunningServer, path: str, body: dict[str, Any], param: str
) -> None:
    status, answer = post(random_server, path, body)
    error = assert_error(status, answer, 400, "BadRequestError")
    assert error["param"] is not None
    assert error["param"].split(".")[0].split("[")[0] == param


def test_malformed_json_is_400(random_server: RunningServer) -> None:
    status, body = post(random_server, "/v1/chat/completions", b'{"messages": [')
    assert_error(status, body, 400, "BadRequestError")


def test_the_sdk_raises_bad_request(random_server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(random_server).completions.create(model="primary-name", prompt="x", n=0)
    assert caught.value.status_code == 400


def test_wrong_method_is_405_and_unknown_path_is_404(random_server: RunningServer) -> None:
    wrong_method = urllib.request.Request(random_server.api_url + "/chat/completions")
    assert_error(*_send(wrong_method), 405, "BadRequestError")
    unknown = urllib.request.Request(random_server.api_url + "/does-not-exist")
    assert_error(*_send(unknown), 404, "NotFoundError")


async def test_bad_requests_never_give_500(random_server: RunningServer) -> None:
    bodies: list[bytes] = [
        b"",
        b"null",
        b"[]",
        b'"text"',
        b'{"messages": null}',
        b'{"messages": [{}]}',
        b'{"messages": [{"role": "user", "content": 5}]}',
        b'{"prompt": [[]]}',
        b'{"prompt": [], "max_tokens": 2}',
        b'{"messages": "hi", "stream": "yes"}',
    ]

    async def send(path: str, data: bytes) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                random_server.base_url + path,
                data=data,
                headers={"Content-Type": "application/json"},
            ) as response,
        ):
            payload = await response.json()
            assert set(payload) == {"error"}, payload
            return response.status

    statuses = await asyncio.gather(
        *(
            send(path, data)
            for data in bodies
            for path in ("/v1/chat/completions", "/v1/completions")
        )
    )
    assert all(400 <= status < 500 for status in statuses), statuses
