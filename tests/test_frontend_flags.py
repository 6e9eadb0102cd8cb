"""vLLM's frontend flags from a vLLM command line, on and off: ``X-Request-Id`` on every
response, SSE keep-alive comments on a quiet stream, ``/load`` tracking, ``/tokenizer_info``
and a Unix domain socket."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from conftest import STARTUP_TIMEOUT, RunningServer, start_server, stop_process
from pydantic import ValidationError

try:  # the HTTP library of the installed openai SDK
    import httpx2 as httpx
except ImportError:
    import httpx  # type: ignore[no-redef]

from llmsim.settings.model import Settings

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
            "--tokens-only",
            "--log-error-stack",
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


def test_uds_serves_over_a_unix_socket_and_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "llmsim.sock"
    path_stale = socket.socket(socket.AF_UNIX)
    path_stale.bind(str(path))  # a stale socket file from an earlier server is replaced
    path_stale.close()
    command = [sys.executable, "-m", "llmsim", "serve", MODEL, "--uds", str(path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSIM_")}
    log = (tmp_path / "uds.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        http = httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), timeout=10)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            assert process.poll() is None, (tmp_path / "uds.log").read_text()
            try:
                if http.get("http://localhost/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, (tmp_path / "uds.log").read_text()
                time.sleep(0.05)
        client = openai.OpenAI(base_url="http://localhost/v1", api_key="x", http_client=http)
        answer = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3
        )
        assert answer.usage is not None
        assert answer.usage.completion_tokens == 3
        assert (
            f"curl --unix-socket {path} http://localhost/v1/" in (tmp_path / "uds.log").read_text()
        )
    finally:
        assert stop_process(process) == 0
        log.close()
    assert not path.exists()


def test_uds_is_one_server() -> None:
    with pytest.raises(ValidationError, match="one socket serves one server, not 2"):
        Settings(uds=Path("/tmp/x.sock"), data_parallel_size=2, dp_ports=True)
    assert Settings(uds=Path("/tmp/x.sock"), data_parallel_size=2).uds == Path("/tmp/x.sock")


def test_scale_out_routes_need_their_flag(flagged: RunningServer, plain: RunningServer) -> None:
    render = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    status, _, body = fetch(flagged, "/v1/chat/completions/render", render)
    assert status == 200, body  # --tokens-only serves them, as --enable-scale-out would
    assert json.loads(body)["token_ids"]
    for path in ("/v1/chat/completions/render", "/inference/v1/generate"):
        status, _, body = fetch(plain, path, render)
        assert status == 403
        assert json.loads(body)["error"] == {
            "message": "Scale-out endpoints are disabled. Restart vllm serve with "
            "--enable-scale-out to enable them.",
            "type": "PermissionDeniedError",
            "param": None,
            "code": 403,
        }


def test_log_error_stack_logs_each_error_with_its_trace(
    flagged: RunningServer, plain: RunningServer
) -> None:
    for server in (flagged, plain):
        assert fetch(server, CHAT, {"model": MODEL, "messages": "none"})[0] == 400
    line = "error response 400 to POST /v1/chat/completions"
    deadline = time.monotonic() + 5
    while line not in flagged.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    logged = flagged.log()
    assert line in logged
    assert "Traceback (most recent call last)" in logged[logged.index(line) :]
    assert "error response" not in plain.log()
