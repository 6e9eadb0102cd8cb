"""Tokens in, tokens out: render, ``/inference/v1/generate`` and derender, as a rollout
framework or a prefix-aware router drives them, against the real CLI on loopback."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, post_json, start_server

CHAT = {"messages": [{"role": "user", "content": "Tell me about caches."}], "max_tokens": 24}

MODEL = "llmsim/sim-model"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        [
            "--latency-model",
            "step",
            "--enable-prompt-tokens-details",
            "--max-model-len",
            "512",
            "--block-size",
            "4",
            "--lora",
            "sql-lora",
        ],
        tmp_path_factory.mktemp("tokens"),
    )
    yield running
    running.stop()


def _generate_body(rendered: dict[str, Any]) -> dict[str, Any]:
    """What a rollout framework sends on: the rendered ids and sampling parameters."""
    return {key: rendered[key] for key in ("token_ids", "sampling_params", "model")}


def _stream(server: RunningServer, path: str, body: dict[str, Any]) -> list[Any]:
    request = urllib.request.Request(
        server.base_url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        text = response.read().decode()
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


def test_render_counts_the_prompt_as_chat_does(server: RunningServer) -> None:
    status, rendered = post_json(server, "/v1/chat/completions/render", {**CHAT, "seed": 3})
    assert status == 200
    assert rendered["request_id"].startswith("chatcmpl-")
    params = rendered["sampling_params"]
    assert params["max_tokens"] == 24
    assert params["seed"] == 3
    assert params["n"] == 1
    status, tokenized = post_json(server, "/tokenize", {"messages": CHAT["messages"]})
    assert rendered["token_ids"] == tokenized["tokens"]
    status, chat = post_json(server, "/v1/chat/completions", CHAT)
    assert chat["usage"]["prompt_tokens"] == len(rendered["token_ids"])


def test_messages_and_responses_render_through_their_chat_translation(
    server: RunningServer,
) -> None:
    """vLLM's ``/v1/messages/render`` and ``/v1/responses/render``: the same token ids as the
    chat request they translate into."""
    messages = [{"role": "user", "content": "Name three prime numbers."}]
    _, chat = post_json(server, "/v1/chat/completions/render", {"messages": messages})
    status, message = post_json(
        server, "/v1/messages/render", {"model": MODEL, "max_tokens": 24, "messages": messages}
    )
    assert status == 200
    assert message["token_ids"] == chat["token_ids"]
    assert message["request_id"].startswith("chatcmpl-")
    assert message["sampling_params"]["max_tokens"] == 24
    status, response = post_json(
        server, "/v1/responses/render", {"input": "Name three prime numbers."}
    )
    assert status == 200
    assert response["token_ids"] == chat["token_ids"]
    assert response["request_id"].startswith("resp_")
    status, refused = post_json(
        server, "/v1/responses/render", {"input": "x", "previous_response_id": "resp_1"}
    )
    assert status == 400
    assert refused["error"]["param"] == "previous_response_id"
    status, bad = post_json(server, "/v1/messages/render", {"model": MODEL, "messages": messages})
    assert status == 400
    assert "error" in bad  # OpenAI's shape here, as vLLM's render route answers
    assert bad.get("type") != "error"


def test_render_generate_derender_equals_the_chat_answer(server: RunningServer) -> None:
    request = {**CHAT, "seed": 11}
    _, rendered = post_json(server, "/v1/chat/completions/render", request)
    status, generated = post_json(server, "/inference/v1/generate", _generate_body(rendered))
    assert status == 200
    assert generated["request_id"].startswith("generate-tokens-")
    choice = generated["choices"][0]
    assert choice["token_ids"]
    assert all(isinstance(i, int) for i in choice["token_ids"])
    prompt_tokens = len(rendered["token_ids"])
    assert generated["usage"]["prompt_tokens"] == prompt_tokens
    assert generated["usage"]["completion_tokens"] == len(choice["token_ids"])
    status, derendered = post_json(
        server,
        "/v1/chat/completions/derender",
        {"generate_response": generated, "prompt_tokens": prompt_tokens, "chat_request": request},
    )
    assert status == 200
    _, chat = post_json(server, "/v1/chat/completions", request)
    assert derendered["object"] == "chat.completion"
    assert (
        derendered["choices"][0]["message"]["content"] == chat["choices"][0]["message"]["content"]
    )
    assert derendered["choices"][0]["finish_reason"] == chat["choices"][0]["finish_reason"]
    assert derendered["usage"] == {
        key: chat["usage"][key] for key in ("prompt_tokens", "completion_tokens", "total_tokens")
    }


def test_generate_streams_token_ids_and_usage(server: RunningServer) -> None:
    body = {
        "token_ids": [5, 6, 7, 8, 9],
        "sampling_params": {"max_tokens": 6, "ignore_eos": True, "seed": 2, "logprobs": 2},
        "stream": True,
        "stream_options": {"include_usage": True},
        "request_id": "rollout-7",
    }
    chunks = _stream(server, "/inference/v1/generate", body)
    assert all(chunk["request_id"] == "generate-tokens-rollout-7" for chunk in chunks)
    ids = [i for chunk in chunks for choice in chunk["choices"] for i in choice["token_ids"]]
    assert len(ids) == 6
    finishes = [c["finish_reason"] for chunk in chunks for c in chunk["choices"]]
    assert finishes[-1] == "length"
    assert all(f is None for f in finishes[:-1])
    logprobs = [
        entry
        for chunk in chunks
        for choice in chunk["choices"]
        for entry in choice["logprobs"]["content"]
    ]
    assert [entry["token"] for entry in logprobs] == [f"token_id:{i}" for i in ids]
    assert all(len(entry["top_logprobs"]) == 2 for entry in logprobs)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    _, again = post_json(
        server, "/inference/v1/generate", {**body, "stream": False, "stream_options": None}
    )
    assert again["choices"][0]["token_ids"] == ids


def test_generate_hits_the_prefix_cache_and_counts_in_metrics(server: RunningServer) -> None:
    prompt = list(range(100, 140))
    body = {"token_ids": prompt, "sampling_params": {"max_tokens": 2}, "model": "sql-lora"}
    post_json(server, "/inference/v1/generate", body)
    status, second = post_json(server, "/inference/v1/generate", body)
    assert status == 200
    assert second["model"] == "sql-lora"
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] >= 36
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    adapter_lines = re.findall(r"vllm:request_success_total\{[^}]*\} (\S+)", metrics)
    assert sum(float(value) for value in adapter_lines) >= 2


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_a_forced_tool_call_round_trips_through_token_ids(
    server: RunningServer, tool_choice: Any
) -> None:
    """Render constrains a forced call as vLLM does; derender parses it back into calls."""
    request = {**CHAT, "max_tokens": 200, "tools": [WEATHER], "tool_choice": tool_choice}
    _, rendered = post_json(server, "/v1/chat/completions/render", request)
    constraint = rendered["sampling_params"]["structured_outputs"]["json"]
    if tool_choice == "required":
        assert constraint["type"] == "array"
    else:
        assert constraint == WEATHER["function"]["parameters"]
    _, generated = post_json(server, "/inference/v1/generate", _generate_body(rendered))
    status, derendered = post_json(
        server,
        "/v1/chat/completions/derender",
        {"generate_response": generated, "chat_request": request},
    )
    assert status == 200
    message = derendered["choices"][0]["message"]
    assert message["content"] is None
    calls = message["tool_calls"]
    assert calls
    assert all(call["function"]["name"] == "get_weather" for call in calls)
    assert all(isinstance(json.loads(call["function"]["arguments"])["city"], str) for call in calls)
    expected = "tool_calls" if tool_choice == "required" else "stop"
    assert derendered["choices"][0]["finish_reason"] == expected


def test_completions_render_one_request_per_prompt(server: RunningServer) -> None:
    status, rendered = post_json(
        server, "/v1/completions/render", {"prompt": ["a b c", "d e"], "max_tokens": 3}
    )
    assert status == 200
    assert len(rendered) == 2
    assert all(item["sampling_params"]["max_tokens"] == 3 for item in rendered)
    _, tokenized = post_json(server, "/tokenize", {"prompt": "a b c"})
    assert rendered[0]["token_ids"] == tokenized["tokens"]
    _, by_ids = post_json(server, "/v1/completions/render", {"prompt": [[7, 8], [9]]})
    assert [item["token_ids"] for item in by_ids] == [[7, 8], [9]]


def test_completions_derender_decodes_each_answer(server: RunningServer) -> None:
    _, tokenized = post_json(
        server, "/tokenize", {"prompt": "hello world", "add_special_tokens": False}
    )
    answer = {
        "choices": [{"index": 0, "token_ids": tokenized["tokens"], "finish_reason": "length"}]
    }
    status, body = post_json(
        server, "/v1/completions/derender", {"generate_responses": [answer, answer]}
    )
    assert status == 200
    assert [choice["text"] for choice in body["choices"]] == ["hello world", "hello world"]
    assert [choice["index"] for choice in body["choices"]] == [0, 1]
    assert body["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/inference/v1/generate", {"token_ids": []}, 400, "token_ids"),
        ("/inference/v1/generate", {"token_ids": [-1]}, 400, "token_ids[0]"),
        (
            "/inference/v1/generate",
            {"token_ids": [1], "sampling_params": {"n": 10**6}},
            400,
            "sampling_params.n",
        ),
        (
            "/inference/v1/generate",
            {"token_ids": [1], "sampling_params": {"max_tokens": "x"}},
            400,
            "sampling_params.max_tokens",
        ),
        ("/inference/v1/generate", {"token_ids": [1], "model": "nope"}, 404, "model"),
        ("/inference/v1/generate", {"token_ids": list(range(600))}, 400, "token_ids"),
        ("/v1/chat/completions/render", {"messages": [], "model": "nope"}, 400, "messages"),
        ("/v1/chat/completions/render", {**CHAT, "model": "nope"}, 404, "model"),
        (
            "/v1/chat/completions/derender",
            {"generate_response": {"choices": [{"token_ids": [2**62]}]}},
            400,
            "token_ids",
        ),
        ("/v1/completions/derender", {"generate_responses": []}, 400, "generate_responses"),
    ],
)
def test_bad_requests_get_vllm_errors(
    server: RunningServer, path: str, body: dict[str, Any], status: int, param: str
) -> None:
    got, answer = post_json(server, path, body)
    assert got == status
    assert answer["error"]["code"] == status
    assert answer["error"]["param"] == param


def test_routes_are_listed_in_the_docs() -> None:
    text = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    for route in (
        "/v1/chat/completions/render",
        "/v1/completions/render",
        "/v1/chat/completions/derender",
        "/v1/completions/derender",
        "/inference/v1/generate",
    ):
        assert route in text


def test_abort_requests_ends_a_generation_and_the_key_guards_inference(
    llmsim_server: Any,
) -> None:
    """vLLM's ``/inference/v1/abort_requests``, behind ``--api-key`` as every ``/inference``
    path is; the aborted stream ends with the tokens it has."""
    server = llmsim_server("--api-key", "k", "--inter-token-latency", "50ms")
    auth = {"Authorization": "Bearer k", "Content-Type": "application/json"}

    def post(path: str, body: object, headers: dict[str, str]) -> Any:
        data = json.dumps(body).encode()
        return urllib.request.urlopen(
            urllib.request.Request(server.base_url + path, data=data, headers=headers), timeout=20
        )

    body = {"token_ids": [5, 6, 7], "sampling_params": {"max_tokens": 60, "ignore_eos": True}}
    with pytest.raises(urllib.error.HTTPError) as refused:
        post("/inference/v1/generate", body, {"Content-Type": "application/json"})
    assert refused.value.code == 401
    stream = post("/inference/v1/generate", {**body, "stream": True, "request_id": "r1"}, auth)
    with stream:
        assert stream.readline().startswith(b"data: ")  # under way
        with post("/inference/v1/abort_requests", {"request_ids": "generate-tokens-r1"}, auth) as r:
            assert (r.status, r.read()) == (200, b"")
        events = [
            json.loads(line[6:])
            for line in stream.read().splitlines()
            if line.startswith(b"data: {")
        ]
    finishes = [c["finish_reason"] for event in events for c in event["choices"]]
    assert finishes[-1] == "abort"
    with pytest.raises(urllib.error.HTTPError) as bad:
        post("/inference/v1/abort_requests", {"request_ids": 5}, auth)
    assert bad.value.code == 400
