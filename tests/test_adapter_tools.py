"""Tool calls and structured output through ``/v1/responses`` and ``/v1/messages``.

Both routes hand ``tools`` and the output format to chat, which decides the calls and
generates the arguments; each test checks an agent-style loop with the official SDK.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import jsonschema
import openai
import pydantic
import pytest
from conftest import RunningServer, start_server

MODEL = "llmsim/sim-model"
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
RESPONSES_TOOLS: Any = [{"type": "function", "name": "get_weather", "parameters": SCHEMA}]
ANTHROPIC_TOOLS: Any = [{"name": "get_weather", "input_schema": SCHEMA}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(["--seed", "3"], tmp_path_factory.mktemp("tools"))
    yield running
    running.stop()


def oai(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_url, api_key="unused", max_retries=0, timeout=30)


def claude(server: RunningServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=server.base_url, api_key="unused", max_retries=0, timeout=30
    )


def test_responses_function_call_then_answer(server: RunningServer) -> None:
    client = oai(server)
    first = client.responses.create(
        model=MODEL, input="Weather in Oslo?", tools=RESPONSES_TOOLS, tool_choice="required"
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls
    for call in calls:
        assert call.name == "get_weather"
        assert set(json.loads(call.arguments)) == {"city"}
    results: Any = [
        {"type": "function_call_output", "call_id": call.call_id, "output": "rain"}
        for call in calls
    ]
    second = client.responses.create(
        model=MODEL, previous_response_id=first.id, input=results, tools=RESPONSES_TOOLS
    )
    assert [item.type for item in second.output] == ["message"]
    assert second.output_text


def test_responses_stream_function_call_arguments(server: RunningServer) -> None:
    with oai(server).responses.stream(
        model=MODEL,
        input="Weather?",
        tools=RESPONSES_TOOLS,
        tool_choice={"type": "function", "name": "get_weather"},
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-1] == "response.completed"
    [call] = [item for item in final.output if item.type == "function_call"]
    assert set(json.loads(call.arguments)) == {"city"}


def test_responses_text_format_parses_into_a_model(server: RunningServer) -> None:
    class Person(pydantic.BaseModel):
        name: str
        age: int

    parsed = oai(server).responses.parse(model=MODEL, input="Someone.", text_format=Person)
    assert isinstance(parsed.output_parsed, Person)


def test_messages_tool_use_then_answer(server: RunningServer) -> None:
    client = claude(server)
    question: Any = {"role": "user", "content": "Weather in Oslo?"}
    first = client.messages.create(
        model=MODEL,
        max_tokens=200,
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "any"},
        messages=[question],
    )
    assert first.stop_reason == "tool_use"
    uses = [block for block in first.content if block.type == "tool_use"]
    assert uses
    assert all(set(block.input) == {"city"} for block in uses)  # type: ignore[arg-type]
    results: Any = [
        {"type": "tool_result", "tool_use_id": block.id, "content": "rain"} for block in uses
    ]
    second = client.messages.create(
        model=MODEL,
        max_tokens=200,
        tools=ANTHROPIC_TOOLS,
        messages=[
            question,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": results},
        ],
    )
    assert second.stop_reason in ("end_turn", "max_tokens")
    assert [block.type for block in second.content] == ["text"]


def test_messages_stream_tool_use_input_json(server: RunningServer) -> None:
    with claude(server).messages.stream(
        model=MODEL,
        max_tokens=200,
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather?"}],
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds
    assert final.stop_reason == "tool_use"
    [use] = [block for block in final.content if block.type == "tool_use"]
    assert use.name == "get_weather"
    assert set(use.input) == {"city"}  # type: ignore[arg-type]


def test_messages_output_config_gives_json_for_the_schema(server: RunningServer) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    message = claude(server).messages.create(
        model=MODEL,
        max_tokens=200,
        messages=[{"role": "user", "content": "Someone."}],
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}}},
    )
    [block] = message.content
    assert block.type == "text"
    jsonschema.validate(json.loads(block.text), schema)
