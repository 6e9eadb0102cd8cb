"""The benchmark's lean HTTP client: it decides what the benchmark counts, so its parsing
is checked here against responses cut at every byte, and once against the real server."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from rawclient import (
    ProtocolError,
    RawConnection,
    build_request,
    open_connection,
)

SSE_EVENTS = [b'data: {"n":1}\n\n', b'data: {"n":22}\n\n', b"data: [DONE]\n\n"]
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(b"%x\r\n%b\r\n" % (len(event), event) for event in SSE_EVENTS)
    + b"0\r\n\r\n"
)
JSON_BODY = b'{"choices":[{"index":0}]}'
PLAIN = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(JSON_BODY), JSON_BODY)


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def connection() -> tuple[RawConnection, FakeTransport]:
    transport = FakeTransport()
    conn = RawConnection(clock=lambda: 1.0)
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


async def exchange(
    conn: RawConnection, pieces: list[bytes], stream: bool
) -> tuple[int, bytes, bytes]:
    """Send a request, feed the response in ``pieces``; (status, body, streamed body)."""
    streamed: list[bytes] = []

    def on_body(data: bytes, now: float) -> None:
        streamed.append(data)

    task = asyncio.ensure_future(conn.send(b"REQ", on_body if stream else None, 5.0))
    await asyncio.sleep(0)
    for piece in pieces:
        conn.data_received(piece)
    status, body = await asyncio.wait_for(task, 1.0)
    return status, body, b"".join(streamed)


def cuts(data: bytes) -> list[list[bytes]]:
    """The response whole, then cut in two at every byte, then one byte at a time."""
    splits = [[data]] + [[data[:at], data[at:]] for at in range(1, len(data))]
    return [*splits, [data[at : at + 1] for at in range(len(data))]]


async def test_chunked_stream_survives_every_cut() -> None:
    for pieces in cuts(CHUNKED):
        conn, transport = connection()
        status, body, streamed = await exchange(conn, pieces, stream=True)
        assert (status, body) == (200, b"")
        assert streamed == b"".join(SSE_EVENTS), pieces
        assert transport.written == [b"REQ"]
        assert not conn.closed


async def test_content_length_body_survives_every_cut() -> None:
    for pieces in cuts(PLAIN):
        conn, _ = connection()
        status, body, _ = await exchange(conn, pieces, stream=False)
        assert (status, body) == (200, JSON_BODY), pieces


async def test_keep_alive_runs_requests_back_to_back() -> None:
    conn, transport = connection()
    assert (await exchange(conn, [PLAIN], stream=False))[:2] == (200, JSON_BODY)
    assert (await exchange(conn, [CHUNKED], stream=True))[2] == b"".join(SSE_EVENTS)
    assert transport.written == [b"REQ", b"REQ"]
    assert not conn.closed


async def test_error_body_is_returned_whole_even_when_streaming() -> None:
    error = b'{"error":{"code":429}}'
    head = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: %d\r\n\r\n" % len(error)
    conn, _ = connection()
    assert await exchange(conn, [head + error], stream=True) == (429, error, b"")


async def test_connection_close_closes_after_the_answer() -> None:
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    conn, transport = connection()
    assert (await exchange(conn, [answer], stream=False))[:2] == (200, b"ok")
    assert conn.closed
    assert transport.closed


async def test_garbage_and_lost_connections_fail_the_request() -> None:
    conn, transport = connection()
    with pytest.raises(ProtocolError):
        await exchange(conn, [b"SSH-2.0-OpenSSH\r\n\r\n"], stream=False)
    assert transport.closed
    conn, _ = connection()
    with pytest.raises(ProtocolError):
        await exchange(
            conn, [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"], False
        )
    conn, _ = connection()
    task = asyncio.ensure_future(conn.send(b"REQ", None, 5.0))
    await asyncio.sleep(0)
    conn.data_received(CHUNKED[:60])
    conn.connection_lost(None)
    with pytest.raises(ConnectionResetError):
        await task


async def test_timeout_fails_the_request_and_closes() -> None:
    conn, transport = connection()
    with pytest.raises(TimeoutError):
        await conn.send(b"REQ", None, 0.05)
    assert conn.closed
    assert transport.closed


def test_build_request_is_a_keep_alive_json_post() -> None:
    host, port, request = build_request("http://127.0.0.1:8123/v1/chat/completions", b"{}")
    assert (host, port) == ("127.0.0.1", 8123)
    assert request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8123\r\n")
    assert request.endswith(b"Content-Length: 2\r\n\r\n{}")
    with pytest.raises(ValueError, match="only http"):
        build_request("https://127.0.0.1/", b"{}")


async def test_reads_a_real_llmsim_stream(aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    from llmsim.api import create_app
    from llmsim.settings.model import Settings

    server = await aiohttp_server(create_app(Settings(config=None)))
    body = b'{"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":true}'
    host, port, request = build_request(f"http://127.0.0.1:{server.port}/v1/chat/completions", body)
    loop = asyncio.get_running_loop()
    conn = await open_connection(host, port, loop.time)
    pieces: list[bytes] = []
    try:
        for _ in range(2):  # twice on one connection
            pieces.clear()
            status, _ = await conn.send(request, lambda data, now: pieces.append(data), 10.0)
            assert status == 200
            events = b"".join(pieces).split(b"\n\n")
            assert events[-2] == b"data: [DONE]"
            assert events[-1] == b""
            assert sum(b'"content":"' in event for event in events) >= 5
    finally:
        conn.close()
