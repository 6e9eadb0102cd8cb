"""The listening socket and an accept loop that keeps up with bursts of connections.

libuv (under uvloop) accepts one connection per turn of the event loop. When the loop is
busy writing thousands of streams, a turn takes milliseconds and new connections pile up
in the kernel's accept queue for seconds: in a test that opens 5,000 streams over 5 s,
half of them waited more than 10 s to be accepted. This module accepts every pending
connection (up to :data:`ACCEPT_BATCH`) each time the socket is readable and hands each
one to aiohttp as an accepted socket, on uvloop and asyncio alike.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

from llmsim.server.fast_lane import protocol_factory

logger = logging.getLogger("llmsim.server")

LISTEN_BACKLOG = 4096
ACCEPT_BATCH = 512
"""At most this many connections are accepted per wake-up, so a flood of connections
cannot keep the loop from writing tokens for long."""
OUT_OF_FILES_PAUSE = 0.5
"""How long accepting pauses when the process has no file descriptors left."""
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def bind_listener(host: str, port: int) -> socket.socket:
    """A non-blocking socket listening on the first address ``host`` resolves to."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    return _listening(sock, address, reuse=True)


def bind_unix_listener(path: Path) -> socket.socket:
    """A non-blocking socket listening on the Unix domain socket ``path``; a stale socket
    file there (a server that did not clean up) is replaced, any other file is left alone."""
    if path.is_socket():
        path.unlink()
    return _listening(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), str(path))


def _listening(sock: socket.socket, address: Any, reuse: bool = False) -> socket.socket:
    """``sock`` bound to ``address``, listening, non-blocking; closed if any step fails."""
    try:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Acceptor:
    """What aiohttp's site expects of a server: ``sockets`` and ``close()``."""

    def __init__(
        self,
        sock: socket.socket,
        factory: Any,
        loop: asyncio.AbstractEventLoop,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._sock = sock
        self._factory = factory
        self._loop = loop
        self._ssl = ssl_context
        self._pending: set[asyncio.Task[Any]] = set()
        self._serving = False
        self._resume: asyncio.TimerHandle | None = None

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._sock,) if self._serving else ()

    def start(self) -> None:
        self._loop.add_reader(self._sock.fileno(), self._accept_ready)
        self._serving = True

    def close(self) -> None:
        """Stop accepting and close the socket, so new connections are refused."""
        if not self._serving:
            return
        self._serving = False
        if self._resume is not None:
            self._resume.cancel()
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    def _accept_ready(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _address = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                self._accept_failed(exc)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._connect(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn, ssl=self._ssl)
        except (OSError, ssl.SSLError):
            conn.close()  # the client left (or failed the TLS handshake) before it was set up

    def _accept_failed(self, exc: OSError) -> None:
        """Out of file descriptors: pause, as asyncio does, instead of spinning."""
        if exc.errno not in _OUT_OF_RESOURCES:
            logger.warning("accept failed: %s", exc)
            return
        logger.warning("accept failed (%s); pausing for %.1fs", exc, OUT_OF_FILES_PAUSE)
        self._loop.remove_reader(self._sock.fileno())
        self._resume = self._loop.call_later(OUT_OF_FILES_PAUSE, self._resume_accepting)

    def _resume_accepting(self) -> None:
        self._resume = None
        if self._serving:
            self._loop.add_reader(self._sock.fileno(), self._accept_ready)


class GreedyAcceptSite(web.BaseSite):
    """An aiohttp site on a listening socket that accepts connections in batches.

    With ``ssl_context`` every accepted connection speaks TLS (HTTPS).
    """

    __slots__ = ("_name", "_sock", "_ssl")

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner)
        self._sock = sock
        self._ssl = ssl_context
        scheme = "https" if ssl_context is not None else "http"
        address = sock.getsockname()
        if isinstance(address, str):  # a Unix domain socket, named as aiohttp names one
            self._name = f"{scheme}://unix:{address}:"
        else:
            self._name = str(URL.build(scheme=scheme, host=address[0], port=address[1]))

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        app = getattr(self._runner, "app", None)
        factory = server if app is None else protocol_factory(server, app)
        acceptor = _Acceptor(self._sock, factory, asyncio.get_running_loop(), self._ssl)
        acceptor.start()
        self._server = acceptor  # type: ignore[assignment]
