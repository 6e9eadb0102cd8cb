"""Input a server cannot use, against a real ``llmsim serve``: numbers beyond range, nesting
deeper than the limit in any field, header bytes that are not text; each is a 4xx in vLLM's
JSON error shape, never a 500. A stream that fails after its headers ends with an error event.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, start_server
from hostile import (
    CHAT,
    COMPLETIONS,
    HI,
    MESSAGES,
    MODEL,
    RESPONSES,
    assert_anthropic_error,
    assert_error,
    call,
    hostile_server,
)

from llmsim.api.http.jsonio import JSONInputError, loads_stdlib


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = hostile_server(tmp_path_factory.mktemp("hostile"))
    yield running
    running.stop()


# -- numbers, nesting and header bytes ------------------------------------------------


def _with(
    extra: bytes,
    base: bytes = b'{"model": "' + MODEL.encode() + b'", "messages": ' + json.dumps(HI).encode(),
) -> bytes:
    return base + b", " + extra + b"}"


@pytest.mark.parametrize(
    "data",
    [
        _with(b'"max_tokens": ' + b"9" * 5000),
        _with(b'"unknown": ' + b"9" * 5000),
        _with(b'"unknown": -' + b"1" * 4301),
        _with(b'"temperature": 1e400'),
        _with(b'"unknown": [-1e999]'),
        _with(b'"logit_bias": {"5": 1e309}'),
    ],
    ids=["int-field", "int-extra", "int-negative", "float-field", "float-extra", "float-nested"],
)
def test_numbers_beyond_range_are_400(server: RunningServer, data: bytes) -> None:
    assert_error(call(server, CHAT, data), 400)


def test_the_standard_library_parser_refuses_them_too() -> None:
    for text in ("9" * 5000, "[1e400]", '{"a": -1e999}', "NaN"):
        with pytest.raises(JSONInputError):
            loads_stdlib(text.encode())
    assert loads_stdlib(b'{"a": [1.5, 12345678901234567890]}') == {"a": [1.5, 12345678901234567890]}


def _deep(depth: int) -> bytes:
    return b'{"a": ' * depth + b"1" + b"}" * depth


NESTED: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "chat-tool-parameters": (
        CHAT,
        lambda x: _with(
            b'"tool_choice": "required", "tools": [{"type": "function", "function": '
            b'{"name": "f", "parameters": {"type": "object", "properties": {"a": ' + x + b"}}}}]"
        ),
    ),
    "chat-tool-calls": (
        CHAT,
        lambda x: (
            b'{"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": '
            b'"function", "function": {"name": "f", "arguments": "{}"}, "x": ' + x + b"}]}, "
            b'{"role": "user", "content": "hi"}]}'
        ),
    ),
    "chat-response-format": (
        CHAT,
        lambda x: _with(
            b'"response_format": {"type": "json_schema", "json_schema": {"name": "x", '
            b'"schema": {"type": "object", "properties": {"a": ' + x + b"}}}}"
        ),
    ),
    "chat-extra": (CHAT, lambda x: _with(b'"unknown": ' + x)),
    "completions-extra": (COMPLETIONS, lambda x: b'{"prompt": "hi", "unknown": ' + x + b"}"),
    "responses-input": (
        RESPONSES,
        lambda x: b'{"input": [{"role": "user", "content": "hi", "x": ' + x + b"}]}",
    ),
    "responses-tools": (
        RESPONSES,
        lambda x: (
            b'{"input": "hi", "tools": [{"type": "function", "name": "f", '
            b'"parameters": ' + x + b"}]}"
        ),
    ),
    "responses-tools-stream": (
        RESPONSES,
        lambda x: (
            b'{"input": "hi", "stream": true, "tools": [{"type": "function", '
            b'"name": "f", "parameters": ' + x + b"}]}"
        ),
    ),
    "responses-text": (
        RESPONSES,
        lambda x: (
            b'{"input": "hi", "text": {"format": {"type": "json_schema", "name": "x", '
            b'"schema": {"type": "object", "properties": {"a": ' + x + b"}}}}}"
        ),
    ),
    "messages-tools": (
        MESSAGES,
        lambda x: (
            b'{"model": "'
            + MODEL.encode()
            + b'", "max_tokens": 5, "messages": '
            + json.dumps(HI).encode()
            + b', "tools": [{"name": "f", "input_schema": '
            + x
            + b"}]}"
        ),
    ),
    "tokenize-tools": (
        "/tokenize",
        lambda x: (
            b'{"messages": ' + json.dumps(HI).encode() + b', "tools": [{"type": '
            b'"function", "function": {"name": "f", "parameters": ' + x + b"}}]}"
        ),
    ),
}


@pytest.mark.parametrize("case", list(NESTED))
@pytest.mark.parametrize("depth", [1000, 121])
def test_deep_nesting_in_any_field_is_a_4xx_never_a_500(
    server: RunningServer, case: str, depth: int
) -> None:
    """1 000 levels is just under the JSON parser's own limit; 121 plus the fields around
    it is just over the body limit of 128 levels, or under it for shallow fields."""
    path, build = NESTED[case]
    reply = call(server, path, build(_deep(depth)))
    assert reply.status < 500, (reply.status, reply.body[:300])
    if reply.status != 200:
        payload = reply.json()
        assert "error" in payload
    else:
        assert not reply.headers["content-type"].startswith("text/event-stream") or (
            b"response.completed" in reply.body
        )
    if depth == 1000:
        if path == MESSAGES:
            assert_anthropic_error(reply, 400)
        else:
            assert "nested more than 128 levels" in assert_error(reply, 400)["message"]


def test_a_guided_json_string_nested_100000_deep_is_400(server: RunningServer) -> None:
    schema = "[" * 100_000 + "]" * 100_000
    error = assert_error(call(server, CHAT, {"messages": HI, "guided_json": schema}), 400)
    assert error["param"] == "guided_json"


def test_a_shallow_guided_json_string_still_works(server: RunningServer) -> None:
    schema = json.dumps({"type": "object", "properties": {"a": {"type": "integer"}}})
    reply = call(server, CHAT, {"messages": HI, "guided_json": schema, "max_tokens": 50})
    assert reply.status == 200
    assert isinstance(json.loads(reply.json()["choices"][0]["message"]["content"]), dict)


def test_a_request_id_that_is_not_utf8_is_400(server: RunningServer) -> None:
    body = {"model": MODEL, "messages": HI, "max_tokens": 2}
    error = assert_error(call(server, CHAT, body, {"X-Request-Id": b"abc\xff\xfe"}), 400)
    assert error["param"] == "X-Request-Id"
    assert call(server, CHAT, body, {"X-Request-Id": "req-1"}).headers["x-request-id"] == "req-1"


def test_an_api_key_that_is_not_utf8_is_401(server: RunningServer) -> None:
    body = {"model": MODEL, "messages": HI, "max_tokens": 2}
    reply = call(server, CHAT, body, {"Authorization": b"Bearer k3y\xff"})
    assert reply.status == 401
    assert reply.json()["error"]["type"] == "AuthenticationError"
    reply = call(server, CHAT, body, {"Authorization": b"", "x-api-key": b"\xc3\x28"})
    assert reply.status == 401


@pytest.mark.parametrize(
    ("path", "body", "param", "limit"),
    [
        (CHAT, {"model": MODEL, "messages": HI, "stop": ["x"] * 100}, "stop", "at most 64"),
        (COMPLETIONS, {"model": MODEL, "prompt": ["x"] * 1025}, "prompt", "at most 1024"),
        ("/v1/embeddings", {"model": MODEL, "input": ["x"] * 2048}, "input", "at most 1024"),
    ],
)
def test_a_list_over_its_limit_is_refused_naming_the_limit(
    server: RunningServer, path: str, body: dict[str, Any], param: str, limit: str
) -> None:
    error = assert_error(call(server, path, body), 400)
    assert error["param"] == param
    assert limit in error["message"], error["message"]


def test_the_server_is_still_healthy_afterwards(server: RunningServer) -> None:
    assert call(server, "/health", method="GET").status == 200
    assert "Traceback" not in server.log()


# -- a stream that fails after its headers ----------------------------------------------
# Nothing a client sends can make a stream fail any more, so these run in-process with a
# writer made to fail, and check what the client reads.


def _fail(*args: object, **kwargs: object) -> bytes:
    raise RuntimeError("the answer could not be written")


STREAM_FAILURES: dict[str, tuple[str, dict[str, Any], str]] = {
    "chat": (CHAT, {"messages": HI, "stream": True, "max_tokens": 3}, "token_chunk"),
    "completions": (COMPLETIONS, {"prompt": "hi", "stream": True, "max_tokens": 3}, "close"),
    "responses": (RESPONSES, {"input": "hi", "stream": True}, "closing"),
    "messages": (
        MESSAGES,
        {"model": MODEL, "messages": HI, "stream": True, "max_tokens": 3},
        "closing",
    ),
}


@pytest.mark.parametrize("api", list(STREAM_FAILURES))
async def test_a_stream_that_fails_after_its_headers_ends_with_an_error_event(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch, api: str
) -> None:
    from llmsim.api import create_app
    from llmsim.api.anthropic.convert import MessagesStream
    from llmsim.api.openai.chat import ChatStreamSink
    from llmsim.api.openai.completions import CompletionStreamSink
    from llmsim.api.responses.convert import ResponsesStream
    from llmsim.settings.model import Settings

    path, body, method = STREAM_FAILURES[api]
    owner = {
        "chat": ChatStreamSink,
        "completions": CompletionStreamSink,
        "responses": ResponsesStream,
        "messages": MessagesStream,
    }[api]
    monkeypatch.setattr(owner, method, _fail)
    client = await aiohttp_client(create_app(Settings(seed=1)))
    response = await client.post(path, json=body)
    assert response.status == 200
    text = await response.text()
    events = [event for event in text.split("\n\n") if event]
    if api in ("chat", "completions"):
        assert events[-1] == "data: [DONE]"
        error = json.loads(events[-2].removeprefix("data: "))["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "InternalServerError"
        assert error["code"] == 500
    elif api == "responses":
        assert events[-2].startswith("event: error\ndata: ")
        error = json.loads(events[-2].split("data: ", 1)[1])
        assert error["type"] == "error"
        assert error["code"] == "server_error"
        assert events[-1].startswith("event: response.failed\ndata: ")
        failed = json.loads(events[-1].split("data: ", 1)[1])
        assert failed["response"]["status"] == "failed"
        assert failed["sequence_number"] == error["sequence_number"] + 1
    else:
        assert events[-1].startswith("event: error\ndata: ")
        error = json.loads(events[-1].split("data: ", 1)[1])
        assert error == {
            "type": "error",
            "error": {"type": "api_error", "message": error["error"]["message"]},
        }


# -- header sizes ---------------------------------------------------------------------

CHAT_BODY = {"model": MODEL, "messages": HI, "max_tokens": 2}


def test_headers_within_vllms_limits_pass_and_beyond_them_are_400(server: RunningServer) -> None:
    # vLLM's defaults, a 4 MB header block of at most 256 lines: 16 KiB a line
    assert call(server, CHAT, CHAT_BODY, {"X-Token": "x" * 12_000}).status == 200
    assert call(server, CHAT, CHAT_BODY, {"X-Token": "x" * 20_000}).status == 400
    assert call(server, CHAT, CHAT_BODY, {f"X-H{i}": "1" for i in range(200)}).status == 200
    assert call(server, CHAT, CHAT_BODY, {f"X-H{i}": "1" for i in range(300)}).status == 400
    assert call(server, CHAT, CHAT_BODY).status == 200  # and the server serves on


def test_vllms_h11_flags_set_the_header_limits(tmp_path: Path) -> None:
    running = start_server(
        [MODEL, "--h11-max-incomplete-event-size", "33554432", "--h11-max-header-count", "512"],
        tmp_path,
    )
    try:  # 32 MiB over 512 lines: 64 KiB a line
        assert call(running, CHAT, CHAT_BODY, {"X-Token": "x" * 60_000}).status == 200
        assert call(running, CHAT, CHAT_BODY, {f"X-H{i}": "1" for i in range(400)}).status == 200
        assert call(running, CHAT, CHAT_BODY, {"X-Token": "x" * 70_000}).status == 400
    finally:
        running.stop()
