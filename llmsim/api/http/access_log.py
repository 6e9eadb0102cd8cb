"""One access-log line per HTTP request, written after the response went out.

The text form follows uvicorn's (``127.0.0.1:54321 - "POST /v1/chat/completions HTTP/1.1"
200``) and adds bytes sent, duration and, for inference requests, the model and token
counts. The same values travel as structured fields for ``--log-format json``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from llmsim.api.http.keys import GENERATION, STARTED, STREAMED
from llmsim.api.openai.inference import REQUEST_ID_HEADER
from llmsim.observability.logs import AccessWriter


def _remote(request: web.BaseRequest) -> str:
    # aiohttp (3.10 and later) keeps the peer per connection; asking the transport means a
    # getpeername() system call per request.
    peer = getattr(request.protocol, "peername", None)
    if peer is None and request.transport is not None:
        peer = request.transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
        return f"{host}:{peer[1]}"
    return request.remote or "-"


class AccessLogger(AbstractAccessLogger):
    """aiohttp's hook, called once the response has been sent.

    aiohttp makes one per connection, so the writer (and its batch of lines) is shared
    through the class: use :meth:`writing_to`.
    """

    writer: ClassVar[AccessWriter | None] = None
    excluded: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def writing_to(
        cls, writer: AccessWriter, excluded: frozenset[str] = frozenset()
    ) -> type[AccessLogger]:
        """A logger class whose instances all write through ``writer``, skipping requests
        to the ``excluded`` paths (vLLM's ``--disable-access-log-for-endpoints``)."""
        return type("AccessLogger", (cls,), {"writer": writer, "excluded": excluded})

    def log(
        self,
        request: web.BaseRequest,
        response: web.StreamResponse,
        elapsed: float,
    ) -> None:
        """``elapsed`` is aiohttp's duration on the loop clock, used when no start was noted."""
        writer = self.writer
        if writer is None or not self.logger.isEnabledFor(logging.INFO):
            return
        if self.excluded and request.path in self.excluded:
            return
        remote = _remote(request)
        version = request.version
        status = response.status
        sent = response.body_length + request.get(STREAMED, 0)
        started = request.get(STARTED)
        seconds = elapsed if started is None else time.perf_counter() - started
        duration_ms = round(seconds * 1000.0, 3)
        line = (
            f'{remote} - "{request.method} {request.raw_path} HTTP/{version.major}.'
            f'{version.minor}" {status} {sent}B {duration_ms:.1f}ms'
        )
        fields: dict[str, Any] = {
            "remote": remote,
            "method": request.method,
            "path": request.path,
            "status": status,
            "duration_ms": duration_ms,
            "bytes": sent,
            "request_id": request.headers.get(REQUEST_ID_HEADER),
        }
        group = request.get(GENERATION)
        if group is not None:
            prompt, completion = group.prompt_tokens, group.completion_tokens
            model = group.request.target.name
            fields["request_id"] = group.request.request_id
            fields["model"] = model
            fields["prompt_tokens"] = prompt
            fields["completion_tokens"] = completion
            line += f" model={model} prompt_tokens={prompt} completion_tokens={completion}"
        writer.write(line, fields)
