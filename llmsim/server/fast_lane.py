"""A short way through for the commonest request: one plain chat completion at a time.

aiohttp's machinery around a handler (its parser's request object, the handler task, the
response's preparation and writer) costs more than the simulation of a zero-latency
request itself: the same handler, run for the same bodies on a bare protocol, answers
about twice as many requests per second. So when a connection's next bytes are exactly one
small ``POST /v1/chat/completions`` with ordinary headers (in one write or several), and the
body decodes as a plain, non-streaming chat request, this protocol runs the very handler
aiohttp would run (behind the same guard: API key, errors in vLLM's shape, ``/load``, access
timing) with a stand-in request, and writes the response aiohttp would write (its headers,
its ``Date`` and ``Server``, the ``on_response_prepare`` signals, the access log line).
Everything else (another route, a header aiohttp reads itself, a stream, a chunked,
compressed, pipelined or large body) goes to aiohttp unchanged, every byte the lane held
included, and the connection stays with aiohttp from then on.

A request that must wait (latency, a full batch) continues as a task; bytes that arrive
meanwhile wait for its response, so answers keep their order. A client that goes away
cancels it, as aiohttp cancels its handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from aiohttp import http_parser as aiohttp_parser
from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict, CIMultiDictProxy

from llmsim.api.http.guard import shape_unrouted
from llmsim.api.http.keys import GENERATION, STREAMED
from llmsim.api.http.sse import HIGH_WATER
from llmsim.api.openai.inference import DECODED, FAST_CHAT, FastChat
from llmsim.server.outbox import Outbox

logger = logging.getLogger("llmsim.server")

REQUEST_LINE = b"POST /v1/chat/completions HTTP/1.1\r\n"
TRANSPORT_HEADERS = frozenset(
    {b"transfer-encoding", b"content-encoding", b"expect", b"upgrade", b"te", b"trailer"}
)
"""Headers that change how aiohttp reads the body or the connection: such a request is
aiohttp's. (The handler reads every other header itself, from the stand-in request.)"""
SINGLETONS = frozenset(
    name.encode()
    for name in getattr(
        aiohttp_parser,
        "SINGLETON_HEADERS",
        ("content-length", "content-type", "host", "transfer-encoding", "user-agent"),
    )
)
"""Headers aiohttp refuses to see twice in a request (its parser's list when it has one)."""
JSON_TYPES = frozenset({b"application/json", b"application/json; charset=utf-8"})
NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
UNSAFE = re.compile(rb"[^\t\x20-\x7e]")
"""Bytes aiohttp's parser would refuse or read otherwise in a header value."""
PENDING_LIMIT = 64 * 1024
"""Bytes kept while a fast request waits; beyond them the connection stops reading."""
MOST_HEADERS = 64
"""More header lines than this (or a head over :data:`LONGEST_HEAD`) is aiohttp's to judge."""
LONGEST_HEAD = 8192
JSON_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
DATE = b"\r\nDate: "
SERVER_LAST = b"\r\nServer: " + SERVER_SOFTWARE.encode() + b"\r\n\r\n"
"""The head aiohttp writes for a JSON answer with no other header, in pieces."""
KEEPALIVE_SLOTS = ("_next_keepalive_close_time", "_keepalive_timeout", "_force_close", "_close")
"""aiohttp's keep-alive state this protocol keeps up to date (checked at start-up)."""


INCOMPLETE: Final = "incomplete"
"""What :func:`plain_post` says of the start of a fast request whose rest is still coming
(clients such as the openai SDK's send the head and the body in two writes)."""
Parsed = tuple[CIMultiDict[str], bytes] | None | Literal["incomplete"]


HEADS_KEPT = 128
"""Request heads whose verdict a connection's lane remembers (see :class:`KnownHeads`)."""
Head = tuple[CIMultiDict[str], int]
"""A fast request's headers, as read from its head, and its ``Content-Length``."""


class KnownHeads:
    """The heads the lane has read lately, with what it read in them.

    A client sends the same head again and again (only ``Content-Length`` changes with
    the body, and often not even that), so the verdict on its bytes is kept: checking them
    line by line was a tenth of a fast request. The headers kept are never written to (the
    handler reads them through a read-only proxy). Bounded: when full, it starts afresh.
    """

    __slots__ = ("_heads",)

    def __init__(self) -> None:
        self._heads: dict[bytes, Head | None] = {}

    def read(self, head: bytes) -> Head | None:
        heads = self._heads
        try:
            return heads[head]
        except KeyError:
            pass
        if len(heads) >= HEADS_KEPT:
            heads.clear()
        verdict = heads[head] = read_head(head)
        return verdict


def plain_post(data: bytes, limit: int, heads: KnownHeads | None = None) -> Parsed:
    """The headers and body of ``data`` if it is exactly one fast request of at most
    ``limit`` body bytes; :data:`INCOMPLETE` if it may become one; else None."""
    if not data.startswith(REQUEST_LINE):
        return INCOMPLETE if REQUEST_LINE.startswith(data) else None
    end = data.find(b"\r\n\r\n", 0, LONGEST_HEAD)
    if end < 0:
        return INCOMPLETE if len(data) < LONGEST_HEAD else None
    head = data[len(REQUEST_LINE) : end]
    read = read_head(head) if heads is None else heads.read(head)
    if read is None:
        return None
    headers, length = read
    body = data[end + 4 :]
    if not 0 < length <= limit or len(body) > length:
        return None
    if len(body) < length:
        return INCOMPLETE
    return headers, body


def read_head(head: bytes) -> Head | None:
    """The header lines of a fast request and its ``Content-Length``; None if aiohttp
    would read them otherwise (or refuse them)."""
    headers: CIMultiDict[str] = CIMultiDict()
    length = -1
    seen: set[bytes] = set()
    lines = head.split(b"\r\n")
    if len(lines) > MOST_HEADERS:
        return None
    for line in lines:
        name, colon, raw = line.partition(b":")
        key = name.lower()
        value = raw.strip(b" \t")
        if (
            not colon
            or key in TRANSPORT_HEADERS
            or NAME.fullmatch(name) is None
            or UNSAFE.search(value)
        ):
            return None
        if key in SINGLETONS:
            if key in seen:
                return None  # aiohttp's 400
            seen.add(key)
        if key == b"content-length":
            if length >= 0 or not value.isdigit():
                return None
            length = int(value)

        elif (key == b"content-type" and value.lower() not in JSON_TYPES) or (
            key == b"connection" and value.lower() != b"keep-alive"
        ):
            return None
        headers.add(name.decode("ascii"), value.decode("ascii"))
    if b"host" not in seen:
        return None
    return headers, length


class FastRequest(dict[Any, Any]):
    """What the chat handler, its guard, the signals and the access log read of a request."""

    method = "POST"
    path = raw_path = path_qs = "/v1/chat/completions"
    version = HttpVersion11
    content_type = "application/json"
    keep_alive = True

    def __init__(
        self,
        app: web.Application,
        headers: CIMultiDict[str],
        body: bytes,
        protocol: FastLaneHandler,
    ) -> None:
        super().__init__()
        self.app = app
        self.headers = CIMultiDictProxy(headers)
        self.content_length = len(body)
        self._body = body
        self.protocol = protocol
        self.transport = protocol.transport

    @property
    def remote(self) -> str | None:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else None

    async def read(self) -> bytes:
        return self._body

    def __hash__(self) -> int:  # type: ignore[override]  # as aiohttp's requests are
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


Signal = Callable[[web.Request, web.StreamResponse], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class LaneShared:
    """What the server's fast-lane connections share."""

    lane: FastChat
    heads: KnownHeads
    """They all send the same heads."""
    outbox: Outbox
    """The answers of a turn of the loop go out together."""
    signals: tuple[Signal, ...]
    """The app's ``on_response_prepare`` handlers that may change a handler's answer
    (:func:`shape_unrouted` only shapes aiohttp's own error answers: none comes this way)."""


class FastLaneHandler(RequestHandler):
    """aiohttp's connection protocol, with the fast lane in front of its parser."""

    __slots__ = (
        "_fast",
        "_heads",
        "_lane",
        "_outbox",
        "_partial",
        "_pending",
        "_signals",
        "_task",
    )

    def __init__(self, shared: LaneShared, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lane, self._heads = shared.lane, shared.heads
        self._outbox, self._signals = shared.outbox, shared.signals
        self._fast = True
        """False once aiohttp has seen a byte of this connection: it keeps it."""
        self._task: asyncio.Task[None] | None = None
        """A fast request that had to wait, still running."""
        self._pending = bytearray()
        """Bytes that came while :attr:`_task` ran."""
        self._partial = bytearray()
        """The start of a fast request whose rest has not come yet."""

    def data_received(self, data: bytes) -> None:
        if self._task is not None:
            self._pending += data
            if len(self._pending) > PENDING_LIMIT and self.transport is not None:
                self.transport.pause_reading()  # resumed when the waiting request answers
            return
        if self._fast and not (self._force_close or self._close):
            if self._partial:
                self._partial += data
                data = bytes(self._partial)
            taken = self._take(data)
            if taken == INCOMPLETE:
                if not self._partial:
                    self._partial += data
                return
            self._partial.clear()
            if taken:
                return
        self._fast = False
        super().data_received(data)  # every byte the lane held, from the start

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._task is not None:
            self._task.cancel()  # the client left: free its slot, as aiohttp cancels
        super().connection_lost(exc)

    async def shutdown(self, timeout: float | None = 15.0) -> None:
        task = self._task
        if task is not None:  # let the fast request answer first, as aiohttp's would
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), timeout)
        await super().shutdown(timeout)

    def _take(self, data: bytes) -> bool | Literal["incomplete"]:
        """Answer ``data`` here if it is a fast request; False: aiohttp's to parse;
        :data:`INCOMPLETE`: wait for the rest."""
        transport = self.transport
        if transport is None or transport.get_write_buffer_size() > HIGH_WATER:
            return False
        if b'"stream":true' in data or b'"stream": true' in data:
            return False  # the usual spellings of a stream: aiohttp's, without a parse here
        lane = self._lane
        arrival = time.monotonic()
        parsed = plain_post(data, lane.limit, self._heads)
        if parsed is None or parsed == INCOMPLETE:
            return INCOMPLETE if parsed else False
        headers, body = parsed
        decoded = lane.decode(body)
        if decoded is None or decoded.stream or decoded.n not in (None, 1):
            return False
        request = FastRequest(lane.app, headers, body, self)
        request[DECODED] = (decoded, arrival)
        started = self._loop.time()
        coro = cast(
            Coroutine[Any, Any, web.StreamResponse], lane.handler(cast(web.Request, request))
        )
        try:
            waiting = coro.send(None)
        except StopIteration as stop:
            self._answer(request, stop.value, started, together=True)
            return True
        task = self._task = self._loop.create_task(self._finish(request, coro, waiting, started))
        group = request.get(GENERATION)
        for sequence in group.sequences if group is not None else ():
            if sequence.task is None:  # it started before there was a task: this is it
                sequence.task = task  # so a shutdown's abort cancels it, as aiohttp's
        return True

    async def _finish(
        self,
        request: FastRequest,
        coro: Coroutine[Any, Any, web.StreamResponse],
        waiting: Any,
        started: float,
    ) -> None:
        try:
            response = await _Resumed(coro, waiting)
            self._answer(request, response, started, together=False)
        except asyncio.CancelledError:  # the client left, or the engine aborted it at shutdown
            if self.transport is not None:
                self.transport.close()  # as aiohttp ends a cancelled handler's connection
            raise
        finally:
            self._task = None
        if self._pending and not self._force_close:
            pending, self._pending = bytes(self._pending), bytearray()
            if self.transport is not None:
                self.transport.resume_reading()
            self.data_received(pending)

    def _answer(
        self, request: FastRequest, response: web.StreamResponse, started: float, *, together: bool
    ) -> None:
        """Write ``response`` as aiohttp writes it, then its access log line; ``together``:
        with the other answers made during this turn of the loop (:mod:`outbox`), as an
        answer made within the read of its request is; one that waited is written at once,
        as aiohttp's handler writes it."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        body = getattr(response, "body", None)
        if not isinstance(body, bytes):  # never for a plain chat answer; still, say so
            logger.error("the fast lane got an answer it cannot write: closing the connection")
            transport.close()
            return
        access = self.access_logger
        logged = access is not None and access.enabled
        headers = response.headers
        if (
            len(headers) == 1
            and headers.get("Content-Type") == "application/json"
            and response.status == 200
            and response.reason == "OK"
            and not self._signals
            and not logged
        ):  # the usual answer, nobody to read its headers: its head from a template
            date = rfc822_formatted_time().encode()
            data = b"".join((JSON_OK, str(len(body)).encode(), DATE, date, SERVER_LAST, body))
        else:
            headers.setdefault("Content-Length", str(len(body)))
            if "Date" not in headers:
                headers["Date"] = rfc822_formatted_time()
            headers.setdefault("Server", SERVER_SOFTWARE)
            for signal in self._signals:
                _run_now(signal(cast(web.Request, request), response))
            lines = "\r\n".join(map(": ".join, headers.items()))  # joined in C
            head = f"HTTP/1.1 {response.status} {response.reason}\r\n{lines}\r\n\r\n"
            data = head.encode("latin-1") + body
        if together:
            self._outbox.send(transport, data)
        else:
            transport.write(data)
        self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        if logged:
            assert access is not None
            request[STREAMED] = len(data)
            access.log(cast(web.BaseRequest, request), response, self._loop.time() - started)


class _Resumed:
    """Awaits a coroutine that already ran up to ``waiting`` (what it yielded), as the task
    that started it would have: the first wait is passed on, then it is driven on."""

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, waiting = self._coro, self._waiting
        while True:
            try:
                value = yield waiting
            except BaseException as exc:  # cancelled: pass it in, as a task would
                try:
                    waiting = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    waiting = coro.send(value)
                except StopIteration as stop:
                    return stop.value


def _run_now(awaitable: Awaitable[object]) -> None:
    """Run a signal handler that does not wait (llmsim's only set headers); one that would
    wait is left out, and said so."""
    coro = cast(Coroutine[Any, Any, object], awaitable)
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    logger.warning("an on_response_prepare handler waited: skipped for a fast-lane response")


def protocol_factory(server: web.Server, app: web.Application) -> Callable[[], RequestHandler]:
    """aiohttp's protocol for each connection: with the fast lane when the app has one and
    this aiohttp keeps the state it relies on, else aiohttp's own."""
    lane = app.get(FAST_CHAT)
    kwargs = getattr(server, "_kwargs", None)
    loop = getattr(server, "_loop", None)
    if (
        lane is None
        or kwargs is None
        or loop is None
        or app.middlewares
        or not all(hasattr(RequestHandler, slot) for slot in KEEPALIVE_SLOTS)
    ):
        return server

    signals = tuple(signal for signal in app.on_response_prepare if signal is not shape_unrouted)
    shared = LaneShared(lane, KnownHeads(), Outbox(loop), signals)

    def fast_lane_handler() -> RequestHandler:
        return FastLaneHandler(shared, server, loop=loop, **kwargs)

    return fast_lane_handler
