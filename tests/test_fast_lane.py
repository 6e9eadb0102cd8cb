"""The fast lane for plain chat requests: it takes the requests it should, answers them byte
for byte as aiohttp would, and leaves every other request to aiohttp.

In-process tests drive the connection protocol with a recording transport, the same request
once as it comes and once with a header that sends it to aiohttp (``TE: trailers``, which
aiohttp ignores in a request); black-box tests check what only a real socket shows."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import RunningServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmsim.api.http.app import create_app
from llmsim.server.fast_lane import HEADS_KEPT, FastLaneHandler, protocol_factory
from llmsim.settings.model import Settings

pytest.importorskip("msgspec")  # the fast lane decodes with the fast extra's msgspec

BODY = {
    "model": "llmsim/sim-model",
    "messages": [{"role": "user", "content": "Summarise load-aware routing."}],
    "max_tokens": 8,
    "seed": 7,
}
WRK = b"Host: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
SDK = (
    b"Host: localhost\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n"
    b"Accept: application/json\r\nContent-Type: application/json\r\nUser-Agent: OpenAI/Python\r\n"
    b"X-Stainless-Lang: python\r\nAuthorization: Bearer sk-none\r\nx-stainless-retry-count: 0\r\n"
)
AIOHTTP = (
    b"Host: localhost\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\nUser-Agent: Python\r\n"
)
TO_AIOHTTP = b"TE: trailers\r\n"


def request(headers: bytes, body: Any = BODY, path: bytes = b"/v1/chat/completions") -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (
        b"POST " + path + b" HTTP/1.1\r\n" + headers
        + b"Content-Length: %d\r\n\r\n" % len(data) + data
    )  # fmt: skip


class Recorder(asyncio.Transport):
    """A connection's other end: keeps what the server writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += data

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name in ("peername", "sockname") else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


Connect = Callable[[], tuple[FastLaneHandler, Recorder]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    runners: list[web.AppRunner] = []
    started: dict[str, Connect] = {}  # one app per settings, for every example of a test

    async def start(settings: Settings) -> Connect:
        key = settings.model_dump_json()
        if key in started:
            return started[key]
        app = create_app(settings)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        assert runner.server is not None
        factory = protocol_factory(runner.server, app)

        def connection() -> tuple[FastLaneHandler, Recorder]:
            protocol = factory()
            assert isinstance(protocol, FastLaneHandler)
            transport = Recorder()
            protocol.connection_made(transport)
            return protocol, transport

        started[key] = connection
        return connection

    yield start  # type: ignore[misc]
    for runner in runners:
        await runner.cleanup()


async def answer(connection: Connect, data: bytes, *cuts: int) -> tuple[bool, bytes]:
    """Whether the fast lane took ``data`` (sent in pieces at ``cuts``), and the response
    written for it."""
    protocol, transport = connection()
    for start, end in zip((0, *cuts), (*cuts, len(data)), strict=True):
        protocol.data_received(data[start:end])
    for _ in range(100):  # aiohttp answers in its handler task
        head, _, rest = bytes(transport.written).partition(b"\r\n\r\n")
        length = re.search(rb"Content-Length: (\d+)", head)
        if length is not None and len(rest) >= int(length.group(1)):
            break
        if transport.closed:
            break
        await asyncio.sleep(0.005)
    taken = protocol._fast
    protocol.connection_lost(None)
    return taken, bytes(transport.written)


def normalized(response: bytes) -> tuple[bytes, list[str], Any]:
    """Status line, header lines and JSON body, without what differs between two answers."""
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = [line if not line.startswith("Date: ") else "Date: -" for line in lines]
    data = json.loads(body)
    data.pop("created", None)
    return status.encode(), headers, data


@pytest.mark.parametrize("headers", [WRK, SDK, AIOHTTP], ids=["wrk", "openai-sdk", "aiohttp"])
async def test_plain_requests_take_the_fast_lane_and_answer_as_aiohttp(
    connect: Any, headers: bytes
) -> None:
    connection = await connect(Settings())
    with_id = headers + b"X-Request-Id: same-id\r\n"
    fast, fast_answer = await answer(connection, request(with_id))
    slow, slow_answer = await answer(connection, request(with_id + TO_AIOHTTP))
    assert (fast, slow) == (True, False)
    assert normalized(fast_answer) == normalized(slow_answer)
    assert json.loads(fast_answer.partition(b"\r\n\r\n")[2])["id"] == "chatcmpl-same-id"


@pytest.mark.parametrize("headers", [WRK, SDK, AIOHTTP], ids=["wrk", "openai-sdk", "aiohttp"])
async def test_an_answer_with_no_header_of_its_own_has_aiohttps_head_too(
    connect: Any, headers: bytes
) -> None:
    """Without ``X-Request-Id`` the answer's head comes from a template: still aiohttp's."""
    connection = await connect(Settings())
    body = {**BODY, "seed": 1}
    fast, fast_answer = await answer(connection, request(headers, body))
    slow, slow_answer = await answer(connection, request(headers + TO_AIOHTTP, body))
    assert (fast, slow) == (True, False)
    (fast_status, fast_headers, fast_body), (slow_status, slow_headers, slow_body) = (
        normalized(fast_answer),
        normalized(slow_answer),
    )
    assert fast_body.pop("id") != slow_body.pop("id")  # each its own
    assert (fast_status, fast_headers, fast_body) == (slow_status, slow_headers, slow_body)
    assert fast_headers[0] == "Content-Type: application/json"


@pytest.mark.parametrize(
    ("settings", "body", "status"),
    [
        (Settings(), {**BODY, "model": "nope"}, 404),
        (Settings(), {**BODY, "max_tokens": 100_000}, 400),
        (Settings(api_key="secret"), BODY, 401),
        (Settings(startup_duration=60), BODY, 503),
    ],
    ids=["unknown-model", "context-length", "api-key", "loading"],
)
async def test_errors_are_the_guards_either_way(
    connect: Any, settings: Settings, body: dict[str, Any], status: int
) -> None:
    connection = await connect(settings)
    fast, fast_answer = await answer(connection, request(WRK, body))
    slow, slow_answer = await answer(connection, request(WRK + TO_AIOHTTP, body))
    assert (fast, slow) == (True, False)
    assert fast_answer.startswith(b"HTTP/1.1 %d " % status)
    assert normalized(fast_answer) == normalized(slow_answer)


@pytest.mark.parametrize(
    "data",
    [
        request(WRK, {**BODY, "stream": True}),
        request(WRK, {**BODY, "n": 2}),
        request(WRK, {**BODY, "logprobs": True}),
        request(WRK, {**BODY, "tools": []}),
        request(WRK, b"{not json"),
        request(WRK, b""),
        request(WRK + b"Expect: 100-continue\r\n"),
        request(WRK + b"Content-Encoding: gzip\r\n"),
        request(WRK + b"Connection: close\r\n"),
        request(b"Host: x\r\nContent-Type: text/plain\r\n"),
        request(WRK + b"Bad Header: x\r\n"),
        request(b"Content-Type: application/json\r\n"),  # no Host: aiohttp's 400
        request(WRK + b"Host: again\r\n"),  # two: aiohttp's 400 too
        request(WRK + b"Content-Type: application/json\r\n"),  # likewise
        request(WRK + b"X-Odd: \x01\r\n"),
        request(WRK, path=b"/v1/completions"),
        request(WRK, path=b"/v1/chat/completions?x=1"),
        request(WRK).replace(b"HTTP/1.1", b"HTTP/1.0", 1),
        request(WRK) * 2,  # pipelined: aiohttp answers both, in order
        request(WRK).replace(b"Content-Length", b"Transfer-Encoding: chunked\r\nX-Length"),
    ],
)
async def test_every_other_request_is_aiohttps(connect: Any, data: bytes) -> None:
    connection = await connect(Settings())
    protocol, _ = connection()
    protocol.data_received(data)
    assert protocol._fast is False
    protocol.connection_lost(None)


@pytest.mark.parametrize(
    "cuts",
    [(20,), (60,), (len(request(WRK)) - 90,), (5, 70, len(request(WRK)) - 3)],
    ids=["request-line", "headers", "body", "four-pieces"],
)
async def test_a_request_in_pieces_is_answered_when_whole(connect: Any, cuts: tuple[int]) -> None:
    """Clients such as the openai SDK write the head and the body apart."""
    connection = await connect(Settings())
    data = request(WRK + b"X-Request-Id: same\r\n")
    fast, fast_answer = await answer(connection, data, *cuts)
    slow, slow_answer = await answer(
        connection, request(WRK + b"X-Request-Id: same\r\n" + TO_AIOHTTP)
    )
    assert (fast, slow) == (True, False)
    assert normalized(fast_answer) == normalized(slow_answer)


async def test_pieces_that_turn_out_otherwise_all_go_to_aiohttp(connect: Any) -> None:
    connection = await connect(Settings())
    data = request(WRK) + b"POST /v1/models HTTP/1.1\r\n"  # a second request behind the first
    taken, written = await answer(connection, data, 60)
    assert not taken
    assert written.startswith(b"HTTP/1.1 200 OK")  # aiohttp had the held bytes too


async def test_a_head_seen_before_gets_the_same_verdict_and_more_heads_than_kept_still_do(
    connect: Any,
) -> None:
    """The lane remembers the heads it read (clients send the same one again and again)."""
    connection = await connect(Settings())
    for _ in range(2):
        assert (await answer(connection, request(WRK)))[0]
        protocol, _ = connection()
        protocol.data_received(request(WRK + b"Host: again\r\n"))  # aiohttp's 400
        assert protocol._fast is False
        protocol.connection_lost(None)
    for number in range(HEADS_KEPT + 5):  # each head new: the memory starts afresh on the way
        taken, written = await answer(connection, request(WRK + b"X-Request-Id: r%d\r\n" % number))
        assert taken
        assert json.loads(written.partition(b"\r\n\r\n")[2])["id"] == f"chatcmpl-r{number}"
    assert (await answer(connection, request(WRK)))[0]


async def test_no_fast_lane_where_the_chat_route_is_not_the_plain_one() -> None:
    for configured in (
        Settings(runner="pooling"),
        Settings(allowed_origins=["*"]),  # CORS is a middleware
        Settings(fast_lane=False),
    ):
        app = create_app(configured)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        assert runner.server is not None
        try:
            assert not isinstance(protocol_factory(runner.server, app)(), FastLaneHandler)
        finally:
            await runner.cleanup()


def gauge(server: RunningServer, name: str) -> float:
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_a_waiting_fast_request_answers_in_order_frees_its_slot_and_outlives_shutdown(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--time-to-first-token", "400ms")
    # Two requests on one connection, the second sent while the first waits: in order.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        first = {**BODY, "messages": [{"role": "user", "content": "first"}], "seed": 1}
        sock.sendall(request(WRK + b"X-Request-Id: one\r\n", first))
        time.sleep(0.1)
        sock.sendall(request(WRK + b"X-Request-Id: two\r\n"))
        received = b""
        while received.count(b"chatcmpl-") < 2:
            chunk = sock.recv(65536)
            assert chunk
            received += chunk
    assert received.index(b"chatcmpl-one") < received.index(b"chatcmpl-two")

    # A client that leaves while its request waits frees the slot at once.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request(WRK, {**BODY, "max_tokens": 4}))
        time.sleep(0.1)
        assert gauge(server, "vllm:num_requests_running") == 1
    deadline = time.monotonic() + 5
    while gauge(server, "vllm:num_requests_running") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gauge(server, "vllm:num_requests_running") == 0

    # A request in flight when the server is told to stop still gets its answer.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request(WRK))
        time.sleep(0.1)
        server.process.send_signal(signal.SIGTERM)
        received = b""
        while b'"usage"' not in received:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK")
    assert server.process.wait(timeout=10) == 0


def test_the_access_log_reads_the_same_either_way(shared_server: RunningServer) -> None:
    def access_lines() -> list[str]:
        return [line for line in shared_server.log().splitlines() if '"POST /v1/chat' in line]

    lines = []
    for extra in (b"", TO_AIOHTTP):
        before = len(access_lines())
        with socket.create_connection(("127.0.0.1", shared_server.port), timeout=10) as sock:
            sock.sendall(request(WRK + b"X-Request-Id: same\r\n" + extra))
            received = b""
            while b'"usage"' not in received:
                chunk = sock.recv(65536)
                assert chunk
                received += chunk
        deadline = time.monotonic() + 5
        while len(access_lines()) == before and time.monotonic() < deadline:
            time.sleep(0.02)
        lines.append(re.sub(r"\d+\.\d+ms|:\d+ -", "", access_lines()[before].split("INFO", 1)[1]))
    assert lines[0] == lines[1]
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in lines[0]


HEADER_LINES = st.sampled_from(
    [
        b"Host: localhost\r\n",
        b"Host: a\r\n",
        b"Content-Type: application/json\r\n",
        b"Content-Type: application/json; charset=utf-8\r\n",
        b"Content-Type: text/plain\r\n",
        b"Connection: keep-alive\r\n",
        b"Connection: close\r\n",
        b"Accept-Encoding: gzip\r\n",
        b"Authorization: Bearer k\r\n",
        b"X-Request-Id: r-1\r\n",
        b"X-Request-Id: \x7f\r\n",
        b"X-Return-Error: 429\r\n",
        b"X-data-parallel-rank: 0\r\n",
        b"x-stainless-lang: python\r\n",
        b"X-Empty:\r\n",
        b"X-Tab: a\tb\r\n",
        b"Bad Header: x\r\n",
        b"Expect: 100-continue\r\n",
        b"Content-Encoding: identity\r\n",
        b"User-Agent: a\r\n",
        b"host: lower\r\n",
        b"X-Spaces:   b  \r\n",
        b"Etag: x\r\n",
        b"Accept: */*\r\n",
    ]
)
BODIES = st.fixed_dictionaries(
    {"messages": st.just([{"role": "user", "content": "Hi"}])},
    optional={
        "model": st.sampled_from(["llmsim/sim-model", "nope", ""]),
        "max_tokens": st.integers(-2, 5000),
        "temperature": st.floats(-1, 3) | st.none(),
        "n": st.integers(0, 2),
        "stream": st.booleans(),
        "seed": st.integers(0, 3),
        "user": st.text(max_size=3),
    },
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(lines=st.lists(HEADER_LINES, max_size=6), body=BODIES, cut=st.integers(0, 600))
async def test_whatever_it_takes_it_answers_as_aiohttp(
    connect: Any, lines: list[bytes], body: dict[str, Any], cut: int
) -> None:
    connection = await connect(Settings())
    headers = b"".join(lines) + b"X-Request-Id: same\r\n"
    if b"X-Return-Error" in headers:  # a forced error status is the same either way
        headers = headers.replace(b"X-Request-Id: same\r\n", b"")
    data = request(headers, {**body, "seed": 1})
    fast, fast_answer = await answer(connection, data, *([cut] if 0 < cut < len(data) else []))
    slow, slow_answer = await answer(connection, request(headers + TO_AIOHTTP, {**body, "seed": 1}))
    assert not slow
    if fast:
        assert normalized(fast_answer) == normalized(slow_answer)


def test_a_busy_fast_connection_stays_open_and_an_idle_one_closes(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server(env={"VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "1"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for _ in range(6):  # 1.8 s of requests 0.3 s apart: past the one-second timeout
            sock.sendall(request(WRK))
            received = b""
            while b'"usage"' not in received:
                chunk = sock.recv(65536)
                assert chunk, "closed while busy"
                received += chunk
            time.sleep(0.3)
        sock.settimeout(5)
        started = time.monotonic()
        assert sock.recv(1) == b""  # idle: closed by the keep-alive timeout
        assert time.monotonic() - started < 3


@pytest.mark.parametrize("extra", [b"", TO_AIOHTTP], ids=["fast", "aiohttp"])
def test_a_request_past_the_shutdown_timeout_is_aborted_and_its_connection_closed(
    llmsim_server: Callable[..., RunningServer], extra: bytes
) -> None:
    server = llmsim_server("--time-to-first-token", "20s", "--shutdown-timeout", "500ms")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request(WRK + extra))
        time.sleep(0.2)
        assert gauge(server, "vllm:num_requests_running") == 1
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert sock.recv(65536) == b""  # closed without an answer, as aiohttp closes it
    assert server.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
