"""Tool calls and structured outputs from outside: the real CLI and the official openai SDK.

Responses are parsed into the SDK's own types (``chat.completions.parse``, streamed tool
call accumulation), arguments are validated against their function's schema with
``jsonschema``, and an agent loop (call, tool result, answer) must end.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, Literal

import openai
import pytest
from conftest import RunningServer, start_server
from jsonschema import Draft202012Validator
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel, Field

from llmsim.engine.tokenizer import count_tokens

MODEL = "llmsim/sim-model"
ASK = [{"role": "user", "content": "What's the weather in Paris and Tokyo?"}]
WEATHER_PARAMS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER_PARAMS},
    },
    {"type": "function", "function": {"name": "get_time"}},
]
TOOL_CALL_ID = re.compile(r"^chatcmpl-tool-[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(["--mode", "random", "--seed", "5"], tmp_path_factory.mktemp("tools"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def eager_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """``auto`` always calls a tool (unless the last message is a tool result)."""
    running = start_server(
        ["--mode", "echo", "--tool-call-probability", "1"], tmp_path_factory.mktemp("eager")
    )
    yield running
    running.stop()


def _client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_url, api_key="unused", max_retries=0)


def _post(server: RunningServer, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        server.api_url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _check_arguments(name: str, arguments: str) -> None:
    if name == "get_weather":
        Draft202012Validator(WEATHER_PARAMS).validate(json.loads(arguments))
    else:
        assert arguments == "{}"


# -- tool calls, JSON --------------------------------------------------------------------


def test_required_tool_choice_returns_valid_tool_calls(server: RunningServer) -> None:
    for seed in range(8):
        completion = _client(server).chat.completions.create(
            model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", seed=seed
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        calls = choice.message.tool_calls
        assert calls
        assert choice.message.content in (None, "")
        for call in calls:
            assert TOOL_CALL_ID.match(call.id)
            assert call.type == "function"
            _check_arguments(call.function.name, call.function.arguments)
        assert completion.usage is not None
        tokens = sum(count_tokens(call.function.arguments) for call in calls)
        assert completion.usage.completion_tokens == tokens
        assert len({call.id for call in calls}) == len(calls)


def test_named_tool_choice_calls_that_tool_and_finishes_with_stop(server: RunningServer) -> None:
    completion = _client(server).chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"  # vLLM and OpenAI: named calls finish with stop
    assert [call.function.name for call in choice.message.tool_calls or []] == ["get_weather"]


def test_parallel_tool_calls_false_gives_one_call(server: RunningServer) -> None:
    counts = set()
    for seed in range(20):
        completion = _client(server).chat.completions.create(
            model=MODEL,
            messages=ASK,
            tools=TOOLS,
            tool_choice="required",
            parallel_tool_calls=False,
            seed=seed,
        )
        counts.add(len(completion.choices[0].message.tool_calls or []))
    assert counts == {1}


def test_auto_is_reproducible_with_a_seed(server: RunningServer) -> None:
    def decisions() -> list[bool]:
        return [
            bool(
                _client(server)
                .chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, seed=seed)
                .choices[0]
                .message.tool_calls
            )
            for seed in range(12)
        ]

    first = decisions()
    assert first == decisions()
    assert any(first)
    assert not all(first)  # default probability 0.5


def test_tool_choice_none_answers_in_text(server: RunningServer) -> None:
    completion = _client(server).chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice="none"
    )
    assert completion.choices[0].message.tool_calls in (None, [])
    assert completion.choices[0].finish_reason in ("stop", "length")


def test_max_tokens_truncates_arguments_with_finish_length(server: RunningServer) -> None:
    completion = _client(server).chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=4,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    arguments = calls[0].function.arguments
    assert arguments.startswith('{"')
    assert count_tokens(arguments) == 4
    with pytest.raises(json.JSONDecodeError):
        json.loads(arguments)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4


# -- tool calls, streamed ----------------------------------------------------------------


def test_streamed_tool_calls_follow_vllm_deltas(server: RunningServer) -> None:
    stream = _client(server).chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        seed=11,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks: list[ChatCompletionChunk] = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in chunks:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                assert delta.function is not None
                if delta.index not in calls:
                    assert delta.id is not None
                    assert TOOL_CALL_ID.match(delta.id)
                    assert delta.type == "function"
                    assert delta.function.name
                    calls[delta.index] = {"name": delta.function.name, "arguments": ""}
                else:
                    assert delta.id is None
                    assert delta.function.name is None
                calls[delta.index]["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    assert sorted(calls) == list(range(len(calls)))
    for call in calls.values():
        _check_arguments(call["name"], call["arguments"])
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == sum(count_tokens(c["arguments"]) for c in calls.values())
    # token-sized pieces: one argument fragment per chunk
    fragments = sum(len(c.choices[0].delta.tool_calls or []) for c in chunks if c.choices)
    assert fragments == usage.completion_tokens


def test_sdk_stream_helper_parses_strict_function_tools(server: RunningServer) -> None:
    class Lookup(BaseModel):
        """Look a word up."""

        word: str = Field(min_length=1)
        language: Literal["en", "fr", "de"]
        limit: int = Field(ge=1, le=5)

    client = _client(server)
    with client.chat.completions.stream(
        model=MODEL,
        messages=ASK,
        tools=[openai.pydantic_function_tool(Lookup)],
        tool_choice="required",
    ) as stream:
        final = stream.get_final_completion()
    call = (final.choices[0].message.tool_calls or [])[0]
    assert isinstance(call.function.parsed_arguments, Lookup)


# -- agent loop and history --------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_agent_loop_ends_with_a_text_answer(eager_server: RunningServer, stream: bool) -> None:
    client = _client(eager_server)
    messages: list[Any] = list(ASK)
    for _turn in range(5):
        if stream:
            with client.chat.completions.stream(model=MODEL, messages=messages, tools=TOOLS) as s:
                completion: ChatCompletion = s.get_final_completion()
        else:
            completion = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
        message = completion.choices[0].message
        if not message.tool_calls:
            assert completion.choices[0].finish_reason == "stop"
            assert message.content
            break
        assert completion.choices[0].finish_reason == "tool_calls"
        messages.append(message.model_dump(exclude_none=True, exclude={"parsed"}))
        for call in message.tool_calls:
            messages.append(
                {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'}
            )
    else:
        pytest.fail("the agent loop never got a text answer")
    assert len(messages) > 2  # at least one tool round trip happened


def test_tool_history_counts_in_the_prompt(server: RunningServer) -> None:
    call = {
        "id": "chatcmpl-tool-1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
    }
    short = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]}]
    longer = [*short, {"role": "tool", "tool_call_id": "chatcmpl-tool-1", "content": "21 C"}]
    client = _client(server)
    usage = [
        client.chat.completions.create(model=MODEL, messages=m, max_tokens=1).usage
        for m in (ASK, short, longer)
    ]
    prompts = [u.prompt_tokens for u in usage if u is not None]
    assert prompts[0] < prompts[1] < prompts[2]
    with_tools = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, max_tokens=1
    )
    assert with_tools.usage is not None
    assert with_tools.usage.prompt_tokens > prompts[0]


# -- errors in vLLM's words --------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "The tool specified in `tool_choice` does not match any of the specified `tools`",
        ),
        ({"tool_choice": "required"}, "When using `tool_choice`, `tools` must be set."),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "Invalid value for `tool_choice`"),
        ({"tools": TOOLS, "tool_choice": {"type": "function"}}, "Invalid value for `function`"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"not": {}}}}]},
            "'not'",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "schema": {"type": "object", "patternProperties": {}},
                    },
                }
            },
            "'patternProperties'",
        ),
        ({"guided_grammar": "root ::= 'a'"}, "guided_grammar"),
        ({"structured_outputs": {"grammar": "root ::= 'a'"}}, "grammar"),
        ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "one kind of constraints"),
        ({"guided_regex": "a", "guided_choice": ["a"]}, "one kind of guided decoding"),
        ({"guided_regex": "(?=a)a"}, "regex"),
    ],
)
def test_bad_tools_and_constraints_get_400(
    server: RunningServer, extra: dict[str, Any], message: str
) -> None:
    status, body = _post(server, "/chat/completions", {"model": MODEL, "messages": ASK, **extra})
    assert status == 400
    assert body["error"]["type"] == "BadRequestError"
    assert body["error"]["code"] == 400
    assert message in body["error"]["message"]


# -- structured outputs ------------------------------------------------------------------


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=120)
    email: str | None
    tags: list[Literal["friend", "colleague", "family"]]


def test_sdk_parse_returns_the_pydantic_object(server: RunningServer) -> None:
    for seed in range(5):
        completion = _client(server).chat.completions.parse(
            model=MODEL, messages=ASK, response_format=Person, seed=seed
        )
        parsed = completion.choices[0].message.parsed
        assert isinstance(parsed, Person)
        assert completion.choices[0].finish_reason == "stop"


def test_json_object_response_format_is_json(server: RunningServer) -> None:
    completion = _client(server).chat.completions.create(
        model=MODEL, messages=ASK, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)


def test_structured_output_is_streamed_in_token_pieces(server: RunningServer) -> None:
    schema = Person.model_json_schema()
    stream = _client(server).chat.completions.create(
        model=MODEL,
        messages=ASK,
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    text = "".join(pieces)
    Person.model_validate_json(text)
    usage = chunks[-1].usage
    assert usage is not None
    assert len(pieces) == usage.completion_tokens == count_tokens(text)


def test_max_tokens_truncates_structured_output(server: RunningServer) -> None:
    completion = _client(server).chat.completions.create(
        model=MODEL,
        messages=ASK,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "p", "schema": Person.model_json_schema()},
        },
        max_tokens=3,
    )
    assert completion.choices[0].finish_reason == "length"
    assert count_tokens(completion.choices[0].message.content or "") == 3


@pytest.mark.parametrize(
    ("extra", "check"),
    [
        ({"guided_choice": ["yes", "no"]}, lambda text: text in ("yes", "no")),
        ({"structured_outputs": {"choice": ["a b", "c"]}}, lambda text: text in ("a b", "c")),
        ({"guided_regex": r"\d{3}-[A-Z]{2}"}, lambda t: re.fullmatch(r"\d{3}-[A-Z]{2}", t)),
        ({"structured_outputs": {"regex": r"(ab|cd)+"}}, lambda t: re.fullmatch(r"(ab|cd)+", t)),
        (
            {
                "guided_json": {
                    "type": "object",
                    "properties": {"n": {"type": "integer"}},
                    "required": ["n"],
                }
            },
            lambda text: isinstance(json.loads(text)["n"], int),
        ),
        (
            {
                "structured_outputs": {
                    "json": json.dumps(
                        {"type": "array", "items": {"type": "boolean"}, "minItems": 1}
                    )
                }
            },
            lambda text: all(isinstance(v, bool) for v in json.loads(text)),
        ),
        ({"response_format": {"type": "json_object"}}, lambda t: isinstance(json.loads(t), dict)),
        ({"structured_outputs": {"json_object": True}}, lambda t: isinstance(json.loads(t), dict)),
    ],
)
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_constraints_on_chat_and_completions(
    server: RunningServer, extra: dict[str, Any], check: Any, endpoint: str
) -> None:
    if endpoint == "chat":
        status, body = _post(server, "/chat/completions", {"messages": ASK, **extra})
        text = body["choices"][0]["message"]["content"]
    else:
        status, body = _post(server, "/completions", {"prompt": "x", "max_tokens": 200, **extra})
        text = body["choices"][0]["text"]
    assert status == 200, body
    assert check(text), text
    assert body["usage"]["completion_tokens"] == count_tokens(text)


def test_completions_constraint_cut_by_default_max_tokens(server: RunningServer) -> None:
    schema = {"type": "array", "items": {"type": "string"}, "minItems": 30}
    status, body = _post(server, "/completions", {"prompt": "x", "guided_json": schema})
    assert status == 200
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 16


def test_metrics_count_tool_call_tokens(server: RunningServer) -> None:
    def generated() -> float:
        with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as response:
            text = response.read().decode()
        line = next(x for x in text.splitlines() if x.startswith("vllm:generation_tokens_total"))
        return float(line.rsplit(" ", 1)[1])

    before = generated()
    completion = _client(server).chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required"
    )
    assert completion.usage is not None
    assert generated() - before == completion.usage.completion_tokens


# -- same engine as plain chat: latency model and failure injection -----------------------


def test_tool_call_tokens_follow_the_latency_model(
    llmsim_server: Any,
) -> None:
    timed: RunningServer = llmsim_server("--inter-token-latency", "20ms", "--seed", "1")
    client = _client(timed)
    started = time.monotonic()
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    elapsed = time.monotonic() - started
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens >= 10
    # one inter-token latency per token after the first; generous for a loaded machine
    assert elapsed >= 0.02 * (usage.completion_tokens - 1) * 0.8


def test_failure_injection_applies_to_tool_requests(server: RunningServer) -> None:
    request = urllib.request.Request(
        server.api_url + "/chat/completions",
        data=json.dumps({"messages": ASK, "tools": TOOLS, "tool_choice": "required"}).encode(),
        headers={"Content-Type": "application/json", "X-Return-Error": "503"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 503
