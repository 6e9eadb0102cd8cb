"""Requests a hostile or careless client sends, against a real ``llmsim serve``: each gets a
4xx in vLLM's JSON shape or a bounded answer, and the server keeps answering others meanwhile.

Heavy but legitimate answers (many choices, long answers, 20 logprobs each) are written in
pieces; compressed bodies are inflated under the body limit; numbers, nesting and header
bytes the server cannot use are refused up front; a stream that fails after its headers ends
with an error event.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, start_server

from llmsim.api.jsonio import JSONInputError, loads_stdlib

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"
MODEL = "llmsim/sim-model"
HI = [{"role": "user", "content": "hi"}]
BODY_LIMIT = 1024 * 1024
WORK_LIMIT = 1_000_000
RESPONSIVE = 1.0
"""Seconds within which /health and a small chat must answer while heavy work runs."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        [
            "--max-request-body-size",
            "1MiB",
            "--max-request-work",
            str(WORK_LIMIT),
            "--max-model-len",
            "4096",
            "--api-key",
            "k3y",
            "--seed",
            "3",
        ],
        tmp_path_factory.mktemp("hostile"),
    )
    yield running
    running.stop()


AUTH = {"Authorization": "Bearer k3y"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    server: RunningServer,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str | bytes] | None = None,
    method: str = "POST",
    timeout: float = 30.0,
) -> Reply:
    """One request on its own connection; header values may be raw bytes."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    started = time.monotonic()
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        sent: dict[str, str | bytes] = {**AUTH, "Content-Type": "application/json"}
        sent.update(headers or {})
        for name, value in sent.items():
            connection.putheader(name, value)
        if data is not None:
            connection.putheader("Content-Length", str(len(data)))
        connection.endheaders(data)
        response = connection.getresponse()
        payload = response.read()
        found = {name.lower(): value for name, value in response.getheaders()}
        return Reply(response.status, found, payload, time.monotonic() - started)
    finally:
        connection.close()


def assert_error(reply: Reply, status: int) -> dict[str, Any]:
    """vLLM's error shape: ``{"error": {message, type, param, code}}`` with ``status``."""
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers["content-type"].startswith("application/json")
    payload = reply.json()
    assert set(payload) == {"error"}
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status
    assert error["type"] == "BadRequestError"
    assert error["message"]
    return error


def assert_anthropic_error(reply: Reply, status: int) -> None:
    assert reply.status == status, (reply.status, reply.body[:300])
    payload = reply.json()
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "BadRequestError"


@dataclass
class Watch:
    """Polls /health and a small chat while something heavy runs; the slowest answers."""

    server: RunningServer
    slowest: dict[str, float] = field(default_factory=lambda: {"health": 0.0, "chat": 0.0})
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Watch:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        small = {"model": MODEL, "messages": HI, "max_tokens": 2}
        while not self._stop.is_set():
            for name, method, path, body in (
                ("health", "GET", "/health", None),
                ("chat", "POST", CHAT, small),
            ):
                try:
                    reply = call(self.server, path, body, method=method, timeout=RESPONSIVE)
                except OSError as exc:
                    self.failures.append(f"{name}: {exc!r}")
                    continue
                if reply.status != 200:
                    self.failures.append(f"{name}: {reply.status}")
                self.slowest[name] = max(self.slowest[name], reply.seconds)
            time.sleep(0.02)

    def assert_responsive(self) -> None:
        assert not self.failures, self.failures
        assert max(self.slowest.values()) < RESPONSIVE, self.slowest


# -- 1. heavy answers are made in pieces while the server stays responsive ----------


def test_a_heavy_logprobs_answer_streams_its_body_and_the_loop_stays_free(
    server: RunningServer,
) -> None:
    body = {
        "model": MODEL,
        "messages": HI,
        "n": 16,
        "max_tokens": 700,
        "ignore_eos": True,
        "logprobs": True,
        "top_logprobs": 20,
    }
    with Watch(server) as watch:
        time.sleep(0.05)
        reply = call(server, CHAT, body, timeout=60)
    watch.assert_responsive()
    assert reply.status == 200, reply.body[:300]
    assert reply.headers.get("transfer-encoding") == "chunked"
    answer = reply.json()
    assert len(answer["choices"]) == 16
    for choice in answer["choices"]:
        content = choice["logprobs"]["content"]
        assert len(content) == 700 == answer["usage"]["completion_tokens"] // 16
        assert all(len(entry["top_logprobs"]) == 20 for entry in content)
        assert "".join(entry["token"] for entry in content) == choice["message"]["content"]


def test_echo_with_prompt_logprobs_of_a_long_prompt_keeps_the_loop_free(
    server: RunningServer,
) -> None:
    prompt = "the quick brown fox jumps over the lazy dog " * 300  # about 2 700 tokens
    body = {
        "model": MODEL,
        "prompt": prompt,
        "echo": True,
        "logprobs": 20,
        "prompt_logprobs": 20,
        "max_tokens": 5,
        "n": 2,
    }
    with Watch(server) as watch:
        reply = call(server, COMPLETIONS, body, timeout=60)
    watch.assert_responsive()
    assert reply.status == 200, reply.body[:300]
    answer = reply.json()
    prompt_tokens = answer["usage"]["prompt_tokens"]
    for choice in answer["choices"]:
        assert choice["text"].startswith(prompt)
        assert len(choice["prompt_logprobs"]) == prompt_tokens
        assert choice["prompt_logprobs"][0] is None
        logprobs = choice["logprobs"]
        assert len(logprobs["tokens"]) == len(logprobs["top_logprobs"]) == prompt_tokens + 5
        assert logprobs["text_offset"][0] == 0


def test_a_streamed_echo_of_a_long_prompt_with_logprobs_keeps_the_loop_free(
    server: RunningServer,
) -> None:
    """The echoed prompt's logprobs are made before the stream starts, not in one go when
    the first token comes out."""
    prompt = "the quick brown fox jumps over the lazy dog " * 300
    body = {
        "model": MODEL,
        "prompt": prompt,
        "echo": True,
        "logprobs": 20,
        "max_tokens": 3,
        "n": 4,
        "stream": True,
    }
    with Watch(server) as watch:
        reply = call(server, COMPLETIONS, body, timeout=60)
    watch.assert_responsive()
    assert reply.status == 200
    events = [event for event in reply.body.split(b"\n\n") if event]
    assert events[-1] == b"data: [DONE]"
    firsts: dict[int, dict[str, Any]] = {}
    for event in events[:-1]:
        choice = json.loads(event.removeprefix(b"data: "))["choices"][0]
        firsts.setdefault(choice["index"], choice)
    assert sorted(firsts) == [0, 1, 2, 3]
    for choice in firsts.values():
        assert choice["text"].startswith(prompt)
        logprobs = choice["logprobs"]
        assert len(logprobs["tokens"]) == len(logprobs["top_logprobs"]) > 2000
        assert logprobs["token_logprobs"][0] is None
        assert all(len(top) >= 20 for top in logprobs["top_logprobs"][1:])


def test_a_thousand_prompts_with_long_answers_keep_the_loop_free(server: RunningServer) -> None:
    """A large body is parsed and its prompts counted in a worker thread, the answers made
    there too, and the answer written in pieces."""
    body = {
        "model": MODEL,
        "prompt": [[7 + i % 50] * 100 for i in range(1024)],
        "max_tokens": 900,
        "ignore_eos": True,
    }
    with Watch(server) as watch:
        reply = call(server, COMPLETIONS, body, timeout=60)
    watch.assert_responsive()
    assert reply.status == 200, reply.body[:300]
    answer = reply.json()
    assert len(answer["choices"]) == 1024
    assert answer["usage"] == {
        "prompt_tokens": 102_400,
        "completion_tokens": 921_600,
        "total_tokens": 1_024_000,
    }


# -- 2. bounded work per request ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "param", "message"),
    [
        (
            CHAT,
            {"messages": HI, "logprobs": True, "top_logprobs": 21},
            "logprobs",
            "Requested sample logprobs of 21, which is greater than max allowed: 20 "
            "(parameter=logprobs, value=21)",
        ),
        (
            COMPLETIONS,
            {"prompt": "hi", "logprobs": 21},
            "logprobs",
            "Requested sample logprobs of 21, which is greater than max allowed: 20 "
            "(parameter=logprobs, value=21)",
        ),
        (
            COMPLETIONS,
            {"prompt": "hi", "prompt_logprobs": 21},
            "prompt_logprobs",
            "Requested prompt logprobs of 21, which is greater than max allowed: 20 "
            "(parameter=prompt_logprobs, value=21)",
        ),
    ],
)
def test_more_logprobs_than_max_logprobs_is_refused_as_vllm_does(
    server: RunningServer, path: str, body: dict[str, Any], param: str, message: str
) -> None:
    error = assert_error(call(server, path, {"model": MODEL, **body}), 400)
    assert error["message"] == message
    assert error["param"] == param


@pytest.mark.parametrize(
    "body",
    [
        # n x max_tokens x (1 + top_logprobs): 128 x 3000 x 21, about 8 million
        {"messages": HI, "n": 128, "max_tokens": 3000, "logprobs": True, "top_logprobs": 20},
        # no max_tokens: each choice may run to the end of the context
        {"messages": HI, "n": 64, "logprobs": True, "top_logprobs": 5},
        # many prompts count too
        {"prompt": ["hi"] * 1024, "max_tokens": 1000, "logprobs": 1},
        # prompt tokens scored for echo and prompt logprobs count too
        {"prompt": "word " * 3000, "n": 32, "echo": True, "logprobs": 20, "max_tokens": 1},
    ],
)
def test_work_above_the_budget_is_a_quick_400_naming_the_limit(
    server: RunningServer, body: dict[str, Any]
) -> None:
    path = CHAT if "messages" in body else COMPLETIONS
    reply = call(server, path, {"model": MODEL, **body})
    error = assert_error(reply, 400)
    assert "--max-request-work" in error["message"]
    assert str(WORK_LIMIT) in error["message"]
    assert reply.seconds < RESPONSIVE


def test_work_within_the_budget_is_served(server: RunningServer) -> None:
    body = {"model": MODEL, "prompt": ["hi"] * 64, "max_tokens": 4, "logprobs": 2}
    reply = call(server, COMPLETIONS, body)
    assert reply.status == 200
    assert len(reply.json()["choices"]) == 64


def test_prompt_plus_max_tokens_beyond_max_model_len_is_400(server: RunningServer) -> None:
    error = assert_error(call(server, CHAT, {"messages": HI, "max_tokens": 4096}), 400)
    assert "maximum context length is 4096 tokens" in error["message"]
    assert error["param"] == "max_tokens"


# -- 3. compressed bodies --------------------------------------------------------------


def _gzip(data: bytes, wbits: int = 31) -> bytes:
    packer = zlib.compressobj(1, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """About 64 KB of gzip that inflates to 64 MiB, 64 times the server's body limit."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    parts = [packer.compress(b'{"messages": [{"role": "user", "content": "')]
    zeros = b"0" * (1 << 20)
    parts.extend(packer.compress(zeros) for _ in range(64))
    parts.append(packer.compress(b'"}]}') + packer.flush())
    return b"".join(parts)


def test_a_compression_bomb_gets_413_at_once_and_stops_inflating(
    server: RunningServer, bomb: bytes
) -> None:
    replies: list[Reply] = []

    def send() -> None:
        replies.append(call(server, CHAT, bomb, {"Content-Encoding": "gzip"}))

    with Watch(server) as watch:
        senders = [threading.Thread(target=send) for _ in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
    watch.assert_responsive()
    assert len(replies) == 4
    for reply in replies:
        error = assert_error(reply, 413)
        assert "once decompressed" in error["message"]
        assert reply.seconds < RESPONSIVE


@pytest.mark.parametrize(
    ("encoding", "wbits"), [("gzip", 31), ("x-gzip", 31), ("deflate", 15), ("deflate", -15)]
)
def test_gzip_and_deflate_bodies_are_read(server: RunningServer, encoding: str, wbits: int) -> None:
    body = json.dumps({"model": MODEL, "messages": HI, "max_tokens": 2}).encode()
    reply = call(server, CHAT, _gzip(body, wbits), {"Content-Encoding": encoding})
    assert reply.status == 200, reply.body[:300]
    assert reply.json()["object"] == "chat.completion"


PLAIN = json.dumps({"model": MODEL, "messages": HI, "max_tokens": 2}).encode()


@pytest.mark.parametrize(
    ("encoding", "data", "status"),
    [
        ("gzip", PLAIN, 400),  # says gzip, is not
        ("deflate", PLAIN, 400),
        ("gzip", _gzip(PLAIN)[:-12], 400),  # cut short
        ("br", PLAIN, 415),
        ("zstd", PLAIN, 415),
        ("garbage", PLAIN, 415),
        ("gzip, gzip", _gzip(_gzip(PLAIN)), 415),
    ],
)
def test_wrong_or_unknown_content_encodings_get_a_json_error(
    server: RunningServer, encoding: str, data: bytes, status: int
) -> None:
    error = assert_error(call(server, CHAT, data, {"Content-Encoding": encoding}), status)
    assert "encoding" in error["message"].lower() or encoding in error["message"]


def test_encoding_errors_on_the_messages_api_come_in_anthropic_shape(
    server: RunningServer,
) -> None:
    assert_anthropic_error(call(server, MESSAGES, PLAIN, {"Content-Encoding": "br"}), 415)


# -- 4. numbers, nesting and header bytes ----------------------------------------------


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


def test_the_server_is_still_healthy_afterwards(server: RunningServer, tmp_path: Path) -> None:
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
    from llmsim.api.chat import ChatStreamSink
    from llmsim.api.completions import CompletionStreamSink
    from llmsim.api.messages_convert import MessagesStream
    from llmsim.api.responses_convert import ResponsesStream
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
