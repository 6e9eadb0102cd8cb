"""Access log, JSON logs and the dashboard, seen from outside a real ``llmsim serve``.

Plus the one in-process piece: the error middleware reporting to the dashboard's stats.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from conftest import RunningServer

from llmsim.api import create_app
from llmsim.api.http.keys import ERROR_LISTENER, LIVE_STATS
from llmsim.observability.logs import AccessWriter, JsonFormatter, TimeStamps
from llmsim.settings.model import Settings

CHAT = "/v1/chat/completions"
ACCESS_LINE = re.compile(
    r'127\.0\.0\.1:\d+ - "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.1" (?P<status>\d{3}) '
    r"(?P<bytes>\d+)B (?P<ms>[0-9.]+)ms"
)
JSON_KEYS = ("time", "level", "logger", "message")
ACCESS_KEYS = ("method", "path", "status", "duration_ms", "remote", "request_id", "bytes")
DASHBOARD_TITLE = "llmsim dashboard"


def send(
    server: RunningServer,
    path: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        server.base_url + path,
        data=data,
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST" if data is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def chat(stream: bool = False, model: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}
    body["ignore_eos"] = True
    if stream:
        body["stream"] = True
    if model is not None:
        body["model"] = model
    return body


def traffic(server: RunningServer) -> None:
    """Two chats (one streamed, one with a request ID), a 404 and a health check."""
    assert send(server, CHAT, chat(), {"X-Request-Id": "trace-1"})[0] == 200
    status, body = send(server, CHAT, chat(stream=True))
    assert status == 200
    assert body.rstrip().endswith(b"data: [DONE]")
    assert send(server, "/v2/nothing")[0] == 404
    assert send(server, "/health")[0] == 200


def access_lines(log: str) -> list[re.Match[str]]:
    """Access lines after the fixture's start-up polling of /health."""
    lines = [match for line in log.splitlines() if (match := ACCESS_LINE.search(line))]
    while lines and lines[0]["path"] == "/health":
        lines.pop(0)
    return lines


def access_records(log: str) -> list[dict[str, Any]]:
    """JSON access records after the fixture's start-up polling of /health."""
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    access = [record for record in records if record["logger"] == "llmsim.access"]
    while access and access[0]["path"] == "/health":
        access.pop(0)
    return access


# -- access log ---------------------------------------------------------------------


def test_default_run_logs_one_access_line_per_request(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server()
    traffic(server)
    assert server.stop() == 0
    log = server.log()
    lines = access_lines(log)
    assert [(m["method"], m["path"], m["status"]) for m in lines] == [
        ("POST", CHAT, "200"),
        ("POST", CHAT, "200"),
        ("GET", "/v2/nothing", "404"),
        ("GET", "/health", "200"),
    ]
    assert all(int(m["bytes"]) > 0 for m in lines)
    chat_lines = [line for line in log.splitlines() if CHAT in line and '" 200 ' in line]
    for line in chat_lines:
        assert "model=llmsim/sim-model prompt_tokens=" in line
        assert line.endswith("completion_tokens=6")
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--no-access-log"], {}), ([], {"LLMSIM_ACCESS_LOG": "false"})],
    ids=["flag", "env"],
)
def test_access_log_can_be_turned_off(
    llmsim_server: Callable[..., RunningServer], args: list[str], env: dict[str, str]
) -> None:
    server = llmsim_server(*args, env=env)
    traffic(server)
    assert server.stop() == 0
    log = server.log()
    assert access_lines(log) == []
    assert "/v2/nothing" not in log
    assert f"http://127.0.0.1:{server.port}" in log  # the banner is still there


def test_a_flag_turns_the_access_log_back_on_over_the_environment(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--access-log", env={"LLMSIM_ACCESS_LOG": "0"})
    traffic(server)
    assert server.stop() == 0
    assert len(access_lines(server.log())) == 4


def test_access_lines_are_info_records_hidden_at_warning_level(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--log-level", "warning")
    traffic(server)
    assert server.stop() == 0
    assert access_lines(server.log()) == []


# -- JSON logs ----------------------------------------------------------------------


def test_json_logs_are_one_object_per_line_with_the_documented_keys(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--log-format", "json", "--lora", "sql-lora")
    traffic(server)
    assert send(server, CHAT, chat(model="sql-lora"))[0] == 200
    assert server.stop() == 0
    lines = [line for line in server.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is JSON: no banner panel
    for record in records:
        assert list(record)[:4] == list(JSON_KEYS)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
        assert record["level"] in ("debug", "info", "warning", "error", "critical")
    startup = records[0]
    assert startup["logger"] == "llmsim.server"
    assert startup["url"] == f"http://127.0.0.1:{server.port}"
    assert startup["model"] == "llmsim/sim-model"
    assert startup["adapters"] == ["sql-lora"]
    access = access_records(server.log())
    assert [(r["method"], r["path"], r["status"]) for r in access] == [
        ("POST", CHAT, 200),
        ("POST", CHAT, 200),
        ("GET", "/v2/nothing", 404),
        ("GET", "/health", 200),
        ("POST", CHAT, 200),
    ]
    for record in access:
        for key in ACCESS_KEYS:
            assert key in record, (key, record)
        assert record["remote"].startswith("127.0.0.1:")
        assert isinstance(record["duration_ms"], float)
        assert record["duration_ms"] >= 0
    first, streamed, missing, health, adapter = access
    assert first["request_id"] == "chatcmpl-trace-1"
    assert streamed["request_id"].startswith("chatcmpl-")
    assert streamed["completion_tokens"] == 6
    assert first["model"] == "llmsim/sim-model"
    assert adapter["model"] == "sql-lora"
    assert missing["request_id"] is None
    assert "model" not in health


def test_json_access_request_id_is_the_client_header_outside_inference(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--log-format", "json")
    send(server, "/v1/models", headers={"X-Request-Id": "probe-7"})
    assert server.stop() == 0
    assert [record["request_id"] for record in access_records(server.log())] == ["probe-7"]


# -- dashboard ----------------------------------------------------------------------


def test_dashboard_serves_and_shows_its_view_instead_of_the_access_log(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--dashboard", "--lora", "sql-lora")
    traffic(server)
    assert send(server, CHAT, chat(model="sql-lora", stream=True))[0] == 200
    assert send(server, CHAT, chat(model="ghost"))[0] == 404
    assert server.stop() == 0
    log = server.log()
    assert "Traceback" not in log
    assert access_lines(log) == []
    # Standard output is a file, so the last frame is printed when the server stops.
    assert log.count(DASHBOARD_TITLE) == 1
    frame = log[log.index(DASHBOARD_TITLE) :]
    assert "requests 3 " in frame
    assert "tokens 18 " in frame
    assert "errors 2 " in frame
    assert "1 / 1 used: sql-lora (idle)" in frame
    assert "404 NotFoundError  POST /v1/chat/completions  The model `ghost` does not exist." in (
        frame
    )
    assert "404 NotFoundError  GET /v2/nothing  Not Found: /v2/nothing" in frame
    ttft = next(line for line in frame.splitlines() if "TTFT" in line)
    assert ttft.split()[-2] == "3"  # three samples


def test_dashboard_on_a_terminal_redraws_while_serving(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--dashboard", env={"TTY_COMPATIBLE": "1"})
    deadline = time.monotonic() + 10.0
    while DASHBOARD_TITLE not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    before = server.log().count(DASHBOARD_TITLE)
    time.sleep(2.0)
    assert send(server, CHAT, chat())[0] == 200
    drawn = server.log().count(DASHBOARD_TITLE) - before
    assert server.stop() == 0
    assert drawn >= 4, f"{drawn} frames in about 2 s"
    assert "requests 1 " in server.log()


# -- the error middleware feeds the dashboard ---------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("LLMSIM_", "VLLM_")) or name == "API_KEY":
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
def test_stats_and_error_listener_are_attached_only_with_the_dashboard() -> None:
    assert LIVE_STATS not in create_app(Settings())
    assert ERROR_LISTENER not in create_app(Settings())
    app = create_app(Settings(dashboard=True))
    assert LIVE_STATS in app
    assert ERROR_LISTENER in app


@pytest.mark.usefixtures("clean_env")
async def test_error_answers_reach_the_dashboard_stats(aiohttp_client: Any) -> None:
    app = create_app(Settings(dashboard=True, api_key="k"))
    client = await aiohttp_client(app)
    auth = {"Authorization": "Bearer k"}
    unauthorized = await client.post(CHAT, json=chat())
    assert unauthorized.status == 401
    assert unauthorized.headers["WWW-Authenticate"] == "Bearer"
    malformed = {**auth, "Content-Type": "application/json"}
    assert (await client.post(CHAT, data=b"{", headers=malformed)).status == 400
    assert (await client.get("/nowhere")).status == 404
    assert (await client.post(CHAT, json=chat(), headers=auth)).status == 200
    errors = app[LIVE_STATS].snapshot().recent_errors
    assert [(e.status, e.type, e.request) for e in errors] == [
        (401, "AuthenticationError", f"POST {CHAT}"),
        (400, "BadRequestError", f"POST {CHAT}"),
        (404, "NotFoundError", "GET /nowhere"),
    ]
    assert errors[1].message.startswith("Invalid JSON body")


# -- the writers, in process --------------------------------------------------------


class CountingStream:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        return None


async def test_access_lines_of_one_loop_turn_go_out_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = CountingStream()
    monkeypatch.setattr("sys.stderr", stream)
    writer = AccessWriter("text")
    for index in range(3):
        writer.write(f"line {index}", {})
    assert stream.writes == []
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(stream.writes) == 1
    lines = stream.writes[0].splitlines()
    assert [line.split("INFO     ")[1] for line in lines] == ["line 0", "line 1", "line 2"]
    assert all(re.match(r"\[\d\d:\d\d:\d\d\] INFO     line", line) for line in lines)


def test_access_lines_outside_a_loop_are_written_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = CountingStream()
    monkeypatch.setattr("sys.stderr", stream)
    writer = AccessWriter("json")
    writer.write("GET /x", {"status": 200, "message": "not allowed to replace the message"})
    record = json.loads(stream.writes[0])
    assert list(record) == [*JSON_KEYS, "status"]
    assert record["message"] == "GET /x"
    assert record["logger"] == "llmsim.access"


def test_json_formatter_keeps_fixed_keys_first_and_adds_the_traceback() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "llmsim.api", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info()
        )
    record.llmsim_fields = {"level": "ignored", "path": "/x"}
    entry = json.loads(formatter.format(record))
    assert list(entry)[:4] == list(JSON_KEYS)
    assert entry["level"] == "error"
    assert entry["message"] == "failed here"
    assert entry["path"] == "/x"
    assert "ValueError: boom" in entry["exception"]


def test_timestamps_are_iso_8601_utc_with_milliseconds() -> None:
    stamps = TimeStamps()
    assert stamps.iso(1_795_441_714.357) == "2026-11-23T13:48:34.357Z"
    assert stamps.iso(1_795_441_714.9999) == "2026-11-23T13:48:34.999Z"
    assert stamps.iso(1_795_441_715.0) == "2026-11-23T13:48:35.000Z"
