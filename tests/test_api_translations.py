"""The Responses and Messages translations, on synthetic chat requests, bodies and chunks.

These run without a server: the translations are pure functions of JSON shapes, so tool
calls are checked here with chat results written by hand, in the shape chat answers with.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from llmsim.api.anthropic.convert import (
    MessagesRequest,
    MessagesStream,
    chat_body,
    message_body,
    stop_fields,
)
from llmsim.api.http.errors import APIError
from llmsim.api.openai.adapted import chat_chunks
from llmsim.api.responses.convert import (
    ResponseShell,
    ResponsesStream,
    chat_tool_choice,
    chat_tools,
    input_messages,
    response_body,
    response_format,
)
from llmsim.api.responses.routes import answer_message
from llmsim.api.responses.store import ResponseStore, stored_response

CALL = {
    "id": "chatcmpl-tool-1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


def chat_result(
    content: str | None, calls: list[dict[str, Any]], finish: str, stop: str | None = None
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "tool_calls": calls},
                "finish_reason": finish,
                "stop_reason": stop,
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
    }


def chunk(delta: dict[str, Any], finish: str | None = None, stop: str | None = None) -> Any:
    choice = {"index": 0, "delta": delta, "finish_reason": finish, "stop_reason": stop}
    return {"id": "chatcmpl-abc", "choices": [choice]}


def tool_chunks() -> list[dict[str, Any]]:
    """A streamed call as chat streams it: id, type and name first, then argument pieces."""
    first = {"index": 0, "id": "call-1", "type": "function", "function": {"name": "f"}}
    return [
        chunk({"role": "assistant", "content": ""}),
        chunk({"tool_calls": [{**first, "function": {"name": "f", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a": '}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call-2", "function": {"name": "g"}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}, "tool_calls"),
    ]


def events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    parsed = []
    for block in data.decode().split("\n\n"):
        if block:
            name_line, data_line = block.split("\n")
            parsed.append((name_line.removeprefix("event: "), json.loads(data_line[6:])))
    return parsed


# -- Responses: requests ------------------------------------------------------------


def test_input_string_and_items_become_chat_messages() -> None:
    assert input_messages("hi") == [{"role": "user", "content": "hi"}]
    items = [
        {"role": "developer", "content": "be brief"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": '{"x":1}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": "42"},
    ]
    messages = input_messages(items)
    assert messages[:2] == [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": "a"},
    ]
    assert messages[2]["role"] == "assistant"
    assert [call["id"] for call in messages[2]["tool_calls"]] == ["c1", "c2"]
    assert messages[3:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "42"},
    ]


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"role": "robot", "content": "x"}, "input[0]"),
        ({"type": "function_call", "name": "f", "arguments": "{}"}, "input[0].call_id"),
        ({"type": "web_search_call"}, "input[0]"),
        ("text", "input[0]"),
    ],
)
def test_bad_input_items_are_400_naming_the_item(item: Any, param: str) -> None:
    with pytest.raises(APIError) as raised:
        input_messages([item])
    assert raised.value.status == 400
    assert raised.value.param == param


def test_function_tools_tool_choice_and_text_format_take_their_chat_forms() -> None:
    tool = {"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}}
    assert chat_tools([tool]) == [
        {
            "type": "function",
            "function": {"name": "f", "description": "d", "parameters": {"type": "object"}},
        }
    ]
    with pytest.raises(APIError):
        chat_tools([{"type": "web_search"}])
    assert chat_tool_choice({"type": "function", "name": "f"}) == {
        "type": "function",
        "function": {"name": "f"},
    }
    assert chat_tool_choice("required") == "required"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert response_format({"format": {"type": "json_schema", "name": "x", "schema": schema}}) == {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": schema},
    }
    assert response_format({"format": {"type": "json_object"}}) == {"type": "json_object"}
    assert response_format({"format": {"type": "text"}}) is None
    assert response_format(None) is None


# -- Responses: results ---------------------------------------------------------------


def shell() -> ResponseShell:
    return ResponseShell("resp_1", "m", {"max_output_tokens": 5}, 1)


def test_text_answer_is_a_message_item_and_length_is_incomplete() -> None:
    body = response_body(shell(), chat_result("hello", [], "length"))
    parsed = Response.model_validate(body)
    assert parsed.output_text == "hello"
    assert parsed.status == "incomplete"
    assert parsed.incomplete_details is not None
    assert parsed.incomplete_details.reason == "max_output_tokens"
    assert parsed.usage is not None
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (7, 5)


def test_tool_calls_become_function_call_items() -> None:
    body = response_body(shell(), chat_result(None, [CALL], "tool_calls"))
    parsed = Response.model_validate(body)
    assert parsed.status == "completed"
    [item] = parsed.output
    assert item.type == "function_call"
    assert (item.call_id, item.name, item.arguments) == (
        "chatcmpl-tool-1",
        "get_weather",
        '{"city": "Paris"}',
    )


def test_text_stream_is_the_full_event_sequence_numbered_from_zero() -> None:
    stream = ResponsesStream(shell())
    data = stream.opening()
    data += stream.feed(chunk({"role": "assistant", "content": ""}))
    data += stream.feed(chunk({"content": "Hel"}))
    data += stream.feed(chunk({"content": "lo"}, "stop"))
    data += stream.closing({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    parsed = events(data)
    assert [name for name, _ in parsed] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [body["sequence_number"] for _, body in parsed] == list(range(len(parsed)))
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    for name, body in parsed:
        assert adapter.validate_python(body).type == name
    final = Response.model_validate(parsed[-1][1]["response"])
    assert final.output_text == "Hello"
    assert stream.final is not None


def test_tool_call_stream_gives_function_call_items_with_argument_deltas() -> None:
    stream = ResponsesStream(shell())
    data = stream.opening() + b"".join(stream.feed(c) for c in tool_chunks())
    data += stream.closing({"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9})
    parsed = events(data)
    names = [name for name, _ in parsed]
    assert names.count("response.output_item.added") == 2
    assert names.count("response.function_call_arguments.delta") == 3
    assert names.count("response.function_call_arguments.done") == 2
    assert "response.output_text.delta" not in names
    final = Response.model_validate(parsed[-1][1]["response"])
    assert [(item.name, item.arguments) for item in final.output] == [  # type: ignore[union-attr]
        ("f", '{"a": 1}'),
        ("g", "{}"),
    ]


def test_an_empty_stream_still_has_one_message_item() -> None:
    stream = ResponsesStream(shell())
    data = stream.opening() + stream.closing(
        {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}
    )
    final = Response.model_validate(events(data)[-1][1]["response"])
    assert final.output_text == ""
    assert len(final.output) == 1


def test_store_keeps_the_newest_and_builds_the_follow_up_conversation() -> None:
    store = ResponseStore(max_entries=2, max_bytes=10_000)
    for name in ("resp_a", "resp_b", "resp_c"):
        store.put(name, stored_response({"id": name}, [], None))
    assert store.get("resp_a") is None
    assert store.get("resp_b") is not None
    store.put("resp_d", stored_response({"id": "resp_d"}, [], None))
    assert store.get("resp_c") is None  # b was used more recently
    assert len(store) == 2
    output = response_body(shell(), chat_result("ok", [CALL], "tool_calls"))["output"]
    answer = answer_message(output)
    assert answer["content"] == "ok"
    assert answer["tool_calls"][0]["id"] == "chatcmpl-tool-1"


# -- Anthropic Messages ---------------------------------------------------------------


def anthropic_request(**fields: Any) -> MessagesRequest:
    base = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    return MessagesRequest.model_validate({**base, **fields})


def test_system_blocks_tool_use_and_tool_result_become_chat_messages() -> None:
    request = anthropic_request(
        system=[{"type": "text", "text": "You are "}, {"type": "text", "text": "terse."}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "t1", "name": "w", "input": {"city": "Oslo"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "rain"},
                    {"type": "text", "text": "thanks"},
                ],
            },
        ],
        tools=[{"name": "w", "input_schema": {"properties": {"city": {"type": "string"}}}}],
        tool_choice={"type": "any"},
        stop_sequences=["END"],
    )
    chat = chat_body(request)
    assert chat["messages"][0] == {"role": "system", "content": "You are terse."}
    assistant = chat["messages"][2]
    assert assistant["content"] == "Let me look."
    call = assistant["tool_calls"][0]
    assert (call["id"], call["function"]["name"]) == ("t1", "w")
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "t1", "content": "rain"}
    assert chat["messages"][4] == {"role": "user", "content": "thanks"}
    assert chat["tool_choice"] == "required"
    assert chat["tools"][0]["function"]["parameters"]["type"] == "object"
    assert chat["stop"] == ["END"]
    schema = {"type": "object"}
    formatted = chat_body(
        anthropic_request(output_config={"format": {"type": "json_schema", "schema": schema}})
    )
    assert formatted["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "json_schema", "schema": schema},
    }
    assert "response_format" not in chat
    named = chat_body(
        anthropic_request(
            tools=request.model_dump()["tools"], tool_choice={"type": "tool", "name": "w"}
        )
    )
    assert named["tool_choice"] == {"type": "function", "function": {"name": "w"}}


def test_stop_reasons_map_as_anthropic_names_them() -> None:
    assert stop_fields("stop", None, []) == ("end_turn", None)
    assert stop_fields("stop", "END", ["END"]) == ("stop_sequence", "END")
    assert stop_fields("length", None, []) == ("max_tokens", None)
    assert stop_fields("tool_calls", None, []) == ("tool_use", None)
    # A named tool choice finishes with "stop" in chat; Anthropic's clients need tool_use.
    assert stop_fields("stop", None, [], called=True) == ("tool_use", None)
    body = message_body(chat_result(None, [CALL], "stop"), "m", [])
    assert body["stop_reason"] == "tool_use"
    stream = MessagesStream("chatcmpl-abc", "m", 7, [])
    stream.feed(tool_chunks()[1])
    usage = {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}
    assert b'"stop_reason":"tool_use"' in stream.closing(usage)


def test_tool_calls_become_tool_use_blocks() -> None:
    body = message_body(chat_result("I'll check.", [CALL], "tool_calls"), "m", [])
    message = Message.model_validate(body)
    assert message.stop_reason == "tool_use"
    text, tool = message.content
    assert text.type == "text"
    assert tool.type == "tool_use"
    assert tool.input == {"city": "Paris"}
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 5)


def test_message_stream_with_text_and_tool_use_parses_as_sdk_events() -> None:
    stream = MessagesStream("chatcmpl-abc", "m", 7, [])
    data = stream.opening() + stream.feed(chunk({"content": "Checking."}))
    data += b"".join(stream.feed(c) for c in tool_chunks())
    data += stream.closing({"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16})
    parsed = events(data)
    adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
    for name, body in parsed:
        assert adapter.validate_python(body).type == name
    names = [name for name, _ in parsed]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    starts = [
        body["content_block"]["type"] for name, body in parsed if name == "content_block_start"
    ]
    assert starts == ["text", "tool_use", "tool_use"]
    assert names.count("content_block_stop") == 3
    partial = [
        body["delta"]["partial_json"]
        for name, body in parsed
        if name == "content_block_delta" and body["index"] == 1
    ]
    assert json.loads("".join(partial)) == {"a": 1}
    assert parsed[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert parsed[-2][1]["usage"]["output_tokens"] == 9


def test_chat_sse_bytes_split_into_chunks() -> None:
    data = b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n'
    assert chat_chunks(data) == [{"a": 1}, {"b": 2}]
