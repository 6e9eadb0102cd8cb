"""Logprobs, echo and prompt logprobs, checked with the openai SDK and raw HTTP.

Values are made up by the simulator, so the tests check what a client relies on: the
shapes parse into the SDK's types, every logprob is at most 0, top lists are sorted and
hold the sampled token, a seed reproduces the numbers, and a lower temperature makes the
sampled token more certain.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from conftest import RunningServer, start_server
from conftest import post_json as post

MODEL = "llmsim/sim-model"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(["--mode", "random"], tmp_path_factory.mktemp("logprobs"))
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_url, api_key="unused", max_retries=0)


def test_chat_logprobs_parse_and_are_plausible(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me something."}],
        max_tokens=12,
        logprobs=True,
        top_logprobs=5,
        seed=42,
    )
    choice = answer.choices[0]
    assert choice.logprobs is not None
    content = choice.logprobs.content or []
    assert "".join(item.token for item in content) == choice.message.content
    assert len(content) == answer.usage.completion_tokens  # type: ignore[union-attr]
    for item in content:
        assert item.logprob <= 0
        assert bytes(item.bytes or []) == item.token.encode()
        assert len(item.top_logprobs) == 5
        values = [top.logprob for top in item.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert item.token in [top.token for top in item.top_logprobs]
        assert all(value <= 0 for value in values)


def test_seed_reproduces_logprobs_in_json_and_stream(client: openai.OpenAI) -> None:
    request: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Same again."}],
        "max_tokens": 8,
        "logprobs": True,
        "top_logprobs": 2,
        "seed": 7,
    }
    first = client.chat.completions.create(**request)
    second = client.chat.completions.create(**request)
    assert first.choices[0].logprobs == second.choices[0].logprobs
    streamed = []
    for chunk in client.chat.completions.create(**request, stream=True):
        if chunk.choices and chunk.choices[0].logprobs is not None:
            streamed.extend(chunk.choices[0].logprobs.content or [])
    assert streamed == first.choices[0].logprobs.content  # type: ignore[union-attr]


def test_lower_temperature_means_more_confident(client: openai.OpenAI) -> None:
    def mean_logprob(temperature: float) -> float:
        answer = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Go."}],
            max_tokens=40,
            logprobs=True,
            temperature=temperature,
            seed=3,
        )
        content = answer.choices[0].logprobs.content or []  # type: ignore[union-attr]
        return sum(item.logprob for item in content) / len(content)

    hot, warm, cold = mean_logprob(1.5), mean_logprob(1.0), mean_logprob(0.0)
    assert hot < warm < cold <= 0
    assert cold > -1e-3


def test_completion_logprobs_shape(client: openai.OpenAI) -> None:
    answer = client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=6, logprobs=3, seed=1
    )
    choice = answer.choices[0]
    logprobs = choice.logprobs
    assert logprobs is not None
    assert "".join(logprobs.tokens or []) == choice.text
    assert len(logprobs.tokens or []) == answer.usage.completion_tokens  # type: ignore[union-attr]
    offsets = logprobs.text_offset or []
    assert offsets == [
        sum(len(t) for t in (logprobs.tokens or [])[:i]) for i in range(len(offsets))
    ]
    for token, value, top in zip(
        logprobs.tokens or [],
        logprobs.token_logprobs or [],
        logprobs.top_logprobs or [],
        strict=True,
    ):
        assert value is not None
        assert value <= 0
        assert top[token] == value
        assert max(top.values()) == value
        assert len(top) == 3


def test_echo_with_logprobs_and_no_generation(client: openai.OpenAI) -> None:
    prompt = "The capital of France is Paris"
    answer = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=0, echo=True, logprobs=1
    )
    choice = answer.choices[0]
    assert choice.text == prompt
    logprobs = choice.logprobs
    assert logprobs is not None
    assert "".join(logprobs.tokens or []) == prompt
    assert (logprobs.token_logprobs or [])[0] is None
    assert (logprobs.top_logprobs or [])[0] is None
    assert all(value is not None and value <= 0 for value in (logprobs.token_logprobs or [])[1:])
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 0


def test_echo_prepends_the_prompt_in_json_and_stream(client: openai.OpenAI) -> None:
    prompt = "Echo me first."
    answer = client.completions.create(model=MODEL, prompt=prompt, max_tokens=5, echo=True, seed=5)
    assert answer.choices[0].text.startswith(prompt)
    generated = answer.choices[0].text[len(prompt) :]
    stream = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=5, echo=True, seed=5, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices) == prompt + generated


def test_lm_eval_loglikelihood_request(server: RunningServer) -> None:
    """The request lm-eval-harness sends for log-likelihoods, parsed as its parser does."""
    context, continuation = [791, 6864, 315, 9822, 374], [12366, 13]
    body = {
        "model": MODEL,
        "prompt": [context + continuation, context],
        "temperature": 0,
        "max_tokens": 1,
        "logprobs": 1,
        "seed": 1234,
        "echo": True,
    }
    status, answer = post(server, "/v1/completions", body)
    assert status == 200, answer
    ctxlen = len(context)
    for choice, ids in zip(
        sorted(answer["choices"], key=lambda c: c["index"]), body["prompt"], strict=True
    ):
        token_logprobs = choice["logprobs"]["token_logprobs"]
        top_logprobs = choice["logprobs"]["top_logprobs"]
        assert len(token_logprobs) == len(ids) + 1  # the prompt, then one generated token
        assert token_logprobs[0] is None
        total = sum(token_logprobs[ctxlen:-1])
        assert total <= 0
        for value, top in zip(token_logprobs[ctxlen:-1], top_logprobs[ctxlen:-1], strict=True):
            assert value <= 0
            assert max(top.values()) >= value


def test_prompt_logprobs(server: RunningServer) -> None:
    status, answer = post(
        server,
        "/v1/completions",
        {"prompt": "Hello there, world", "max_tokens": 1, "prompt_logprobs": 2},
    )
    assert status == 200
    entries = answer["choices"][0]["prompt_logprobs"]
    assert entries[0] is None
    _, tokens = post(server, "/tokenize", {"prompt": "Hello there, world"})
    assert len(entries) == tokens["count"]
    for token_id, entry in zip(tokens["tokens"][1:], entries[1:], strict=True):
        assert str(token_id) in entry
        assert 2 <= len(entry) <= 3
        for item in entry.values():
            assert set(item) == {"logprob", "rank", "decoded_token"}
            assert item["logprob"] <= 0
    status, chat = post(
        server,
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "prompt_logprobs": 0},
    )
    assert status == 200
    assert chat["prompt_logprobs"][0] is None
    assert len(chat["prompt_logprobs"]) == chat["usage"]["prompt_tokens"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"prompt": "Hello"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ],
)
def test_prompt_logprobs_are_refused_for_streams(
    server: RunningServer, path: str, body: dict[str, object]
) -> None:
    status, error = post(server, path, {**body, "stream": True, "prompt_logprobs": 1})
    assert status == 400
    assert error["error"]["message"] == "`prompt_logprobs` are not available when `stream=True`."
    assert error["error"]["type"] == "BadRequestError"
    # 0 asks for none, so a stream may carry it, as vLLM allows.
    request = urllib.request.Request(
        server.base_url + path,
        data=json.dumps({**body, "stream": True, "prompt_logprobs": 0, "max_tokens": 2}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        assert response.status == 200
        assert response.read().rstrip().endswith(b"data: [DONE]")


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"prompt": "x", "logprobs": 21}, "logprobs"),
        ("/v1/completions", {"prompt": "x", "prompt_logprobs": 21}, "prompt_logprobs"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 0}, None),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 21},
            "logprobs",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
            "top_logprobs",
        ),
    ],
)
def test_logprob_limits(
    server: RunningServer, path: str, body: dict[str, Any], param: str | None
) -> None:
    status, answer = post(server, path, body)
    assert status == 400
    assert answer["error"]["param"] == param


def test_max_logprobs_flag_raises_the_limit(llmsim_server: Any) -> None:
    running = llmsim_server("--max-logprobs", "30")
    status, answer = post(
        running, "/v1/completions", {"prompt": "x", "logprobs": 25, "max_tokens": 2}
    )
    assert status == 200
    assert all(len(top) == 25 for top in answer["choices"][0]["logprobs"]["top_logprobs"])
