"""vLLM's frontend flags from a vLLM command line, on and off: ``X-Request-Id`` on every
response, SSE keep-alive comments on a quiet stream, and ``/load`` tracking."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from conftest import RunningServer, start_server

MODEL = "org/frontend"
SLOW_START = ("--time-to-first-token", "1500ms")
"""A stream quiet for 1.5 s: a one-second keep-alive fires, and /load sees it in flight."""
STREAM = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Hi"}],
    "max_tokens": 2,
    "stream": True,
}


@pytest.fixture(scope="module")
def flagged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        [
            MODEL,
            "--enable-request-id-headers",
            "--sse-keep-alive-interval",
            "1",
            "--enable-server-load-tracking",
            "--enable-tokenizer-info-endpoint",
            *SLOW_START,
        ],
        tmp_path_factory.mktemp("flagged"),
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server([MODEL, *SLOW_START], tmp_path_factory.mktemp("plain"))
    yield running
    running.stop()


def fetch(
    server: RunningServer, path: str, body: object = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        server.base_url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def load_during_a_stream(server: RunningServer) -> tuple[int, bytes]:
    """``/load`` while a stream waits for its first token, and the stream's bytes."""
    streamed: list[bytes] = []
    worker = threading.Thread(target=lambda: streamed.append(fetch(server, CHAT, STREAM)[2]))
    worker.start()
    try:
        for _ in range(100):  # until the request is in (at most about a second)
            load = json.loads(fetch(server, "/load")[2])["server_load"]
            if load or _slept(0.01):
                break
    finally:
        worker.join(timeout=20)
    return load, streamed[0]


def _slept(seconds: float) -> bool:
    threading.Event().wait(seconds)
    return False


CHAT = "/v1/chat/completions"


def test_every_response_names_its_request(flagged: RunningServer) -> None:
    for path, body in (("/health", None), ("/nowhere", None), (CHAT, {"messages": []})):
        status, headers, _ = fetch(flagged, path, body)
        assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-Id"]), (path, status)
        status, headers, _ = fetch(flagged, path, body, {"X-Request-Id": "trace-7"})
        assert headers["X-Request-Id"] == "trace-7", (path, status)
    status, headers, _ = fetch(flagged, "/v1/models")
    assert status == 200
    assert headers["X-Request-Id"] != fetch(flagged, "/v1/models")[1]["X-Request-Id"]


def test_a_quiet_stream_gets_keep_alives_and_load_counts_it(flagged: RunningServer) -> None:
    load, body = load_during_a_stream(flagged)
    assert load == 1
    events = body.split(b"\n\n")
    assert events[0] == b": keep-alive"  # before the first token, after a quiet second
    assert events.count(b": keep-alive") == 1
    assert events[-2:] == [b"data: [DONE]", b""]
    assert json.loads(fetch(flagged, "/load")[2]) == {"server_load": 0}


def test_without_the_flags_none_of_it(plain: RunningServer) -> None:
    assert "X-Request-Id" not in fetch(plain, "/health")[1]
    load, body = load_during_a_stream(plain)
    assert load == 0  # vLLM's /load without --enable-server-load-tracking
    assert b"keep-alive" not in body
    assert body.startswith(b"data: {")


def test_tokenizer_info_only_with_its_flag(flagged: RunningServer, plain: RunningServer) -> None:
    status, _, body = fetch(flagged, "/tokenizer_info")
    assert (status, json.loads(body)) == (200, {"tokenizer_class": "BuiltinTokenizer"})
    assert fetch(plain, "/tokenizer_info")[0] == 404
