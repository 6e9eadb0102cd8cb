"""Derender's parsers: a thought and auto tool calls survive render -> generate -> derender,
whole and streamed chunk by chunk, and equal the chat answer with the same seed (the real
CLI on loopback, plain HTTP)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RunningServer, post_json, start_server

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
ASK = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 300}
TOOLS = {**ASK, "tools": [WEATHER], "tool_choice": "auto"}


@pytest.fixture(scope="module")
def thinking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A vLLM command line: a reasoning parser, a tool parser, calls on every auto turn."""
    running = start_server(
        [
            "--reasoning-parser",
            "qwen3",
            "--enable-auto-tool-choice",
            "--tool-call-parser",
            "hermes",
            "--tool-call-probability",
            "1",
            "--max-model-len",
            "2048",
        ],
        tmp_path_factory.mktemp("parsed"),
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """llmsim's own command line: auto tool choice is on, no reasoning parser."""
    running = start_server(
        ["--tool-call-probability", "1", "--max-model-len", "2048"],
        tmp_path_factory.mktemp("plain"),
    )
    yield running
    running.stop()


def _round_trip(server: RunningServer, request: dict[str, Any]) -> dict[str, Any]:
    """What a rollout framework does: render, generate with the rendered ids, derender."""
    status, rendered = post_json(server, "/v1/chat/completions/render", request)
    assert status == 200, rendered
    sent = {key: rendered[key] for key in ("token_ids", "sampling_params", "model")}
    status, generated = post_json(server, "/inference/v1/generate", sent)
    assert status == 200, generated
    ids = generated["choices"][0]["token_ids"]
    assert generated["usage"]["completion_tokens"] == len(ids)  # the markup counts too
    status, derendered = post_json(
        server,
        "/v1/chat/completions/derender",
        {
            "generate_response": generated,
            "prompt_tokens": len(rendered["token_ids"]),
            "chat_request": request,
        },
    )
    assert status == 200, derendered
    assert derendered["id"] == generated["request_id"]
    return derendered


def _comparable(message: dict[str, Any]) -> dict[str, Any]:
    """A message without its random call ids."""
    calls = [{**call, "id": None} for call in message["tool_calls"]]
    return {**message, "tool_calls": calls}


def _same_as_chat(server: RunningServer, request: dict[str, Any]) -> dict[str, Any]:
    derendered = _round_trip(server, request)
    status, chat = post_json(server, "/v1/chat/completions", request)
    assert status == 200
    got, want = derendered["choices"][0], chat["choices"][0]
    assert _comparable(got["message"]) == _comparable(want["message"])
    assert got["finish_reason"] == want["finish_reason"]
    assert derendered["usage"]["prompt_tokens"] == chat["usage"]["prompt_tokens"]
    return got["message"]


def test_a_thought_is_split_from_the_answer(thinking: RunningServer) -> None:
    message = _same_as_chat(thinking, {**ASK, "seed": 5})
    assert message["reasoning"]
    assert message["content"]
    assert "<think>" not in message["content"] + message["reasoning"]


def test_a_thought_cut_short_is_all_reasoning(thinking: RunningServer) -> None:
    message = _same_as_chat(thinking, {**ASK, "seed": 5, "max_tokens": 3})
    assert message["content"] is None
    assert message["reasoning"]


def test_no_thinking_and_hidden_reasoning(thinking: RunningServer) -> None:
    off = {**ASK, "seed": 6, "chat_template_kwargs": {"enable_thinking": False}}
    assert _same_as_chat(thinking, off)["reasoning"] is None
    hidden = {**ASK, "seed": 6, "include_reasoning": False}
    message = _same_as_chat(thinking, hidden)
    assert message["reasoning"] is None
    assert message["content"]


def test_auto_tool_calls_after_a_thought(thinking: RunningServer) -> None:
    message = _same_as_chat(thinking, {**TOOLS, "seed": 7})
    assert message["reasoning"]
    assert message["tool_calls"]
    for call in message["tool_calls"]:
        assert call["id"].startswith("chatcmpl-tool-")
        assert call["function"]["name"] == "get_weather"
        assert isinstance(json.loads(call["function"]["arguments"])["city"], str)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_auto_tool_calls_under_llmsims_own_command_line(plain: RunningServer, seed: int) -> None:
    message = _same_as_chat(plain, {**TOOLS, "seed": seed})
    assert "reasoning" not in message
    assert message["tool_calls"]


def test_generate_writes_the_calls_as_hermes_markup(plain: RunningServer) -> None:
    _, rendered = post_json(plain, "/v1/chat/completions/render", {**TOOLS, "seed": 1})
    decided = rendered["sampling_params"]["extra_args"]["llmsim"]
    assert decided["tool_calls"][0]["name"] == "get_weather"
    sent = {key: rendered[key] for key in ("token_ids", "sampling_params")}
    _, generated = post_json(plain, "/inference/v1/generate", sent)
    choice = generated["choices"][0]
    assert choice["finish_reason"] == "stop"
    _, text = post_json(plain, "/detokenize", {"tokens": choice["token_ids"]})
    assert text["prompt"].startswith('<tool_call>\n{"name": "get_weather", "arguments": {')
    assert text["prompt"].endswith("}\n</tool_call>")


def test_text_without_a_parser_stays_content(plain: RunningServer) -> None:
    _, ids = post_json(plain, "/tokenize", {"prompt": "<think>a</think>b"})
    answer = {"choices": [{"index": 0, "token_ids": ids["tokens"]}]}
    _, body = post_json(plain, "/v1/chat/completions/derender", {"generate_response": answer})
    assert body["choices"][0]["message"]["content"] == "<think>a</think>b"


def _generate_stream(server: RunningServer, request: dict[str, Any]) -> list[dict[str, Any]]:
    _, rendered = post_json(server, "/v1/chat/completions/render", request)
    body = {
        "token_ids": rendered["token_ids"],
        "sampling_params": rendered["sampling_params"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    http = urllib.request.Request(
        server.base_url + "/inference/v1/generate",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(http, timeout=20) as response:
        events = response.read().decode().split("\n\n")
    datas = [event.removeprefix("data: ") for event in events if event]
    return [json.loads(data) for data in datas if data != "[DONE]"]


def _derender_stream(
    server: RunningServer, chunks: list[dict[str, Any]], request: dict[str, Any]
) -> list[dict[str, Any]]:
    """One derender call per generate chunk, the state carried from call to call."""
    state, out = None, []
    for chunk in chunks:
        body = {
            "stream": True,
            "generate_chunk": chunk,
            "stream_state": state,
            "chat_request": request,
        }
        status, answer = post_json(server, "/v1/chat/completions/derender", body)
        assert status == 200, answer
        assert set(answer) == {"chunk", "stream_state"}
        state = answer["stream_state"]
        out.append(answer["chunk"])
    return out


@pytest.mark.parametrize("request_body", [{**ASK, "seed": 5}, {**TOOLS, "seed": 7}])
def test_streamed_derender_joins_up_to_the_whole_answer(
    thinking: RunningServer, request_body: dict[str, Any]
) -> None:
    generated = _generate_stream(thinking, request_body)
    chunks = _derender_stream(thinking, generated, request_body)
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    deltas = [choice["delta"] for chunk in chunks for choice in chunk["choices"]]
    assert deltas[0]["role"] == "assistant"
    assert all(delta["role"] is None for delta in deltas[1:])
    content = "".join(delta["content"] or "" for delta in deltas)
    reasoning = "".join(delta["reasoning"] or "" for delta in deltas)
    calls = [call for delta in deltas for call in delta["tool_calls"]]
    whole = _round_trip(thinking, request_body)["choices"][0]
    assert reasoning == whole["message"]["reasoning"]
    assert content == (whole["message"]["content"] or "")
    assert [call["function"] for call in calls] == [
        call["function"] for call in whole["message"]["tool_calls"]
    ]
    assert [call["index"] for call in calls] == list(range(len(calls)))
    finishes = [choice["finish_reason"] for chunk in chunks for choice in chunk["choices"]]
    assert finishes[-1] == whole["finish_reason"]
    streamed = sum(len(choice["token_ids"]) for chunk in generated for choice in chunk["choices"])
    assert chunks[-1]["usage"]["completion_tokens"] == streamed


def test_streamed_completion_derender(plain: RunningServer) -> None:
    _, ids = post_json(plain, "/tokenize", {"prompt": "one two three"})
    state, text = None, ""
    for index, token in enumerate(ids["tokens"]):
        last = index == len(ids["tokens"]) - 1
        chunk = {
            "request_id": "r",
            "choices": [
                {"index": 0, "token_ids": [token], "finish_reason": "stop" if last else None}
            ],
        }
        body = {"stream": True, "generate_chunk": chunk, "stream_state": state}
        status, answer = post_json(plain, "/v1/completions/derender", body)
        assert status == 200, answer
        assert answer["chunk"]["object"] == "text_completion"
        assert answer["chunk"]["id"] == "r"
        state = answer["stream_state"]
        text += answer["chunk"]["choices"][0]["text"]
    assert text == "one two three"
    assert state["output_token_ids"] == ids["tokens"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions/derender", {"stream": True}, "generate_chunk"),
        (
            "/v1/chat/completions/derender",
            {
                "stream": True,
                "generate_chunk": {"choices": [{"index": 0}, {"index": 1}]},
            },
            None,
        ),
        (
            "/v1/completions/derender",
            {
                "stream": True,
                "generate_chunk": {"choices": []},
                "stream_state": {"read_offset": -1},
            },
            "stream_state.read_offset",
        ),
    ],
)
def test_bad_stream_chunks_get_vllm_errors(
    plain: RunningServer, path: str, body: dict[str, Any], param: str | None
) -> None:
    status, answer = post_json(plain, path, body)
    assert status == 400
    assert answer["error"]["param"] == param


def test_completions_derender_takes_one_prompt_count_per_answer(plain: RunningServer) -> None:
    answer = {"request_id": "cmpl-r", "choices": [{"index": 0, "token_ids": [104, 105]}]}
    body = {"generate_responses": [answer, answer], "prompt_tokens": [3, 4]}
    status, derendered = post_json(plain, "/v1/completions/derender", body)
    assert status == 200
    assert derendered["id"] == "cmpl-r"
    assert derendered["usage"] == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    status, error = post_json(plain, "/v1/completions/derender", {**body, "prompt_tokens": [3]})
    assert status == 400
    assert error["error"]["param"] == "prompt_tokens"


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": \n</tool_call>',
        "<tool_call>" * 2000,
        "Sure. <tool_call>\n[1, 2]\n</tool_call>",
    ],
)
def test_calls_that_do_not_parse_stay_content(plain: RunningServer, text: str) -> None:
    """As vLLM's Hermes parser: the whole text is the content; many tags take one pass."""
    _, ids = post_json(plain, "/tokenize", {"prompt": text})
    answer = {"choices": [{"index": 0, "token_ids": ids["tokens"]}]}
    body = {"generate_response": answer, "chat_request": TOOLS}
    status, derendered = post_json(plain, "/v1/chat/completions/derender", body)
    assert status == 200
    choice = derendered["choices"][0]
    assert choice["message"]["content"] == text
    assert choice["message"]["tool_calls"] == []
    assert choice["finish_reason"] == "stop"
