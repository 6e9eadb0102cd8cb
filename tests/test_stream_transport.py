"""Token writes go straight to the connection: framing, slow readers, bursts, logging."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.request
from collections.abc import Callable

from aiohttp import web

from llmsim.server.listener import ACCEPT_BATCH, GreedyAcceptSite, bind_listener
from tests.conftest import RunningServer

CHAT = "/v1/chat/completions"


def stream_request(port: int, max_tokens: int) -> bytes:
    body = json.dumps(
        {
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "stream": True,
        }
    ).encode()
    return (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def read_until_end(sock: socket.socket, timeout: float) -> bytes:
    """Everything up to the terminating zero-length chunk."""
    sock.settimeout(timeout)
    data = bytearray()
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\r\n0\r\n\r\n") and time.monotonic() < deadline:
        part = sock.recv(1 << 16)
        if not part:
            break
        data += part
    return bytes(data)


def dechunk(raw: bytes) -> bytes:
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    body = bytearray()
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return bytes(body)
        body += rest[:size]
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]


def running(server: RunningServer) -> float:
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(r"^vllm:num_requests_running\{[^}]*\} (\S+)$", text, re.M)
    assert match is not None
    return float(match.group(1))


def test_a_client_that_stops_reading_holds_its_stream_until_it_reads(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--max-model-len", "100000", "--no-access-log")
    tokens = 40_000  # several MB of SSE: more than the kernel's socket buffers hold
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(stream_request(server.port, tokens))
        time.sleep(1.0)
        assert running(server) == 1  # waiting for the reader, not finished
        body = dechunk(read_until_end(sock, timeout=60))
    events = body.split(b"\n\n")
    content = [e for e in events if b'"content":"' in e and b'"role"' not in e]
    assert len(content) == tokens
    assert events[-2] == b"data: [DONE]"
    assert running(server) == 0


def test_the_access_log_counts_the_streamed_bytes(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server()
    with socket.socket() as sock:
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(stream_request(server.port, 20))
        raw = read_until_end(sock, timeout=10)
    deadline = time.monotonic() + 5
    logged = None
    while logged is None and time.monotonic() < deadline:
        match = re.search(r'"POST /v1/chat/completions HTTP/1.1" 200 (\d+)B', server.log())
        logged = int(match.group(1)) if match else None
        time.sleep(0.05)
    assert logged is not None, server.log()
    assert logged == len(raw)  # as aiohttp counts: the head and every framed chunk


async def test_a_burst_of_connections_is_accepted_in_one_wake_up() -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    listener = bind_listener("127.0.0.1", 0)
    port = listener.getsockname()[1]
    site = GreedyAcceptSite(runner, listener)
    await site.start()
    count = min(200, ACCEPT_BATCH)
    try:
        # Blocking connects complete in the kernel while the loop is held up here.
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
        await asyncio.sleep(0)  # one turn of the loop: the listener is readable once
        await asyncio.sleep(0.05)
        for client in clients:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = await asyncio.gather(*(asyncio.to_thread(_read_all, c) for c in clients))
        assert all(answer.startswith(b"HTTP/1.1 200") for answer in answers)
        assert all(answer.endswith(b"hi") for answer in answers)
    finally:
        for client in clients:
            client.close()
        await runner.cleanup()
    assert listener.fileno() == -1  # stopping the site closed the listening socket


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while part := sock.recv(4096):
        data += part
    return data
