"""A lean HTTP/1.1 client for the load generator: one keep-alive connection per slot.

It sends one pre-built request and parses the answer in the protocol's
``data_received`` callback, timestamping each read there: no task switch, stream reader
or response object per chunk. On a 2-core machine the aiohttp client needs about a core
to read 500 token streams; this one needs a fraction of that, which leaves the server
and the kernel the CPU a timing measurement must not take from them.

It speaks just enough HTTP for the benchmark: ``Content-Length`` and chunked bodies,
keep-alive, ``Connection: close``. Anything else ends the connection with an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

BodyCallback = Callable[[bytes, float], None]
"""Called with each piece of the response body and the time its read arrived."""

_MAX_HEAD = 65536


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 this client understands."""


def build_request(url: str, body: bytes) -> tuple[str, int, bytes]:
    """``(host, port, request bytes)`` of a JSON POST to ``url`` on a keep-alive connection."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"only http:// URLs are supported, not {url!r}")
    port = parts.port or 80
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {parts.hostname}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return parts.hostname, port, head.encode() + body


class _Response:
    """Parser state of the answer being read."""

    def __init__(self, on_body: BodyCallback | None, clock: Callable[[], float]) -> None:
        self.on_body = on_body
        self.clock = clock
        self.status = 0
        self.body = bytearray()
        self.head_done = False
        self.chunked = False
        self.remaining = 0  # bytes left in a Content-Length body or the current chunk
        self.skip = 0  # bytes of a chunk's closing CRLF still to skip
        self.keep_alive = True
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class RawConnection(asyncio.Protocol):
    """One connection; :meth:`send` runs one request on it at a time."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.response: _Response | None = None
        self.closed = False

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is not None and not response.done.done():
            reason = exc or ConnectionResetError("the server closed the connection")
            response.done.set_exception(reason)

    def data_received(self, data: bytes) -> None:
        now = self.clock()
        response = self.response
        if response is None:
            self._abort(ProtocolError("data without a request"))
            return
        try:
            self._feed(response, self.buffer + data if self.buffer else data, now)
        except ProtocolError as exc:
            self._abort(exc)
        except ValueError as exc:  # a status code, length or chunk size that is no number
            self._abort(ProtocolError(str(exc)))

    # -- requests -----------------------------------------------------------------
    async def send(
        self, request: bytes, on_body: BodyCallback | None, timeout: float
    ) -> tuple[int, bytes]:
        """Send ``request``; return the status and the body (empty if ``on_body`` read it).

        Raises ``TimeoutError`` after ``timeout`` seconds, and whatever ended the
        connection; either way the connection is closed.
        """
        if self.closed or self.transport is None:
            raise ConnectionResetError("the connection is closed")
        response = _Response(on_body, self.clock)
        self.response, self.buffer = response, b""
        self.transport.write(request)
        expiry = asyncio.get_running_loop().call_later(timeout, self._abort, TimeoutError())
        try:
            await response.done
        except BaseException:
            self.close()
            raise
        finally:
            expiry.cancel()
            self.response = None
        if not response.keep_alive:
            self.close()
        return response.status, bytes(response.body)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _abort(self, exc: Exception) -> None:
        response = self.response
        if response is not None and not response.done.done():
            response.done.set_exception(exc)
        self.close()

    # -- parsing ------------------------------------------------------------------
    def _feed(self, response: _Response, data: bytes, now: float) -> None:
        if not response.head_done:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > _MAX_HEAD:
                    raise ProtocolError("response head too large")
                self.buffer = data
                return
            self._parse_head(response, data[:end])
            data = data[end + 4 :]
            if not response.chunked and response.remaining == 0:
                self._finish(response, data)
                return
        if response.chunked:
            self._feed_chunked(response, data, now)
        else:
            self._feed_length(response, data, now)

    def _parse_head(self, response: _Response, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)
        if len(status) < 2 or not status[0].startswith(b"HTTP/1."):
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        response.status = int(status[1])
        if response.status != 200:
            response.on_body = None  # an error's body is returned whole, not streamed
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                response.chunked = value == b"chunked"
            elif name == b"connection" and value == b"close":
                response.keep_alive = False
        if not response.chunked:
            if length is None:
                raise ProtocolError("a body without Content-Length or chunked encoding")
            response.remaining = length
        response.head_done = True

    def _deliver(self, response: _Response, piece: bytes, now: float) -> None:
        if response.on_body is not None:
            response.on_body(piece, now)
        else:
            response.body += piece

    def _feed_length(self, response: _Response, data: bytes, now: float) -> None:
        piece = data[: response.remaining]
        response.remaining -= len(piece)
        if piece:
            self._deliver(response, piece, now)
        if response.remaining == 0:
            self._finish(response, data[len(piece) :])
        else:
            self.buffer = b""

    def _feed_chunked(self, response: _Response, data: bytes, now: float) -> None:
        at, end = 0, len(data)
        pieces: list[bytes] = []
        while at < end:
            if response.remaining:
                take = min(response.remaining, end - at)
                pieces.append(data[at : at + take])
                response.remaining -= take
                at += take
                if not response.remaining:
                    response.skip = 2  # the CRLF after the chunk's data
                continue
            if response.skip:
                take = min(response.skip, end - at)
                response.skip -= take
                at += take
                continue
            line_end = data.find(b"\r\n", at)
            if line_end < 0:
                break
            size = int(data[at:line_end].split(b";", 1)[0], 16)
            if size == 0:
                trailer_end = data.find(b"\r\n", line_end + 2)
                if trailer_end < 0:
                    break  # wait for the empty line that ends the trailer
                self._deliver_pieces(response, pieces, now)
                self._finish(response, data[trailer_end + 2 :])
                return
            at = line_end + 2
            response.remaining = size
        self.buffer = data[at:]
        self._deliver_pieces(response, pieces, now)

    def _deliver_pieces(self, response: _Response, pieces: list[bytes], now: float) -> None:
        if pieces:
            self._deliver(response, pieces[0] if len(pieces) == 1 else b"".join(pieces), now)

    def _finish(self, response: _Response, rest: bytes) -> None:
        if rest:
            raise ProtocolError("data after the end of the response")
        self.buffer = b""
        if not response.done.done():
            response.done.set_result(None)


async def open_connection(host: str, port: int, clock: Callable[[], float]) -> RawConnection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: RawConnection(clock), host, port)
    return protocol
