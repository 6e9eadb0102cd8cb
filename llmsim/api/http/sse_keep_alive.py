"""vLLM's ``--sse-keep-alive-interval``: a comment line on a quiet stream.

A chat or completion stream that sends nothing for the interval (queued, in a long prefill,
between slow tokens) gets ``: keep-alive``, a comment every SSE client skips, so a proxy's
idle timeout does not cut it. The clock restarts with every chunk; nothing follows the last.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence as Seq

from llmsim.api.http.sse import StreamSink
from llmsim.engine import Sequence, TokenSink
from llmsim.engine.pacer import RelaySink

KEEP_ALIVE = b": keep-alive\n\n"


class KeepAliveSink(RelaySink):
    """Passes tokens through, and writes :data:`KEEP_ALIVE` whenever the stream has been
    quiet for ``interval`` seconds, until :meth:`stop`."""

    def __init__(self, inner: TokenSink, writer: StreamSink, interval: float) -> None:
        super().__init__(inner)
        self._writer = writer
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._task = self._loop.create_task(self._beat())

    def tokens(self, sequence: Sequence, start: int, texts: Seq[str]) -> bool:
        self._last = self._loop.time()
        return self._inner.tokens(sequence, start, texts)

    def finished(self, sequence: Sequence) -> None:
        self._last = self._loop.time()
        self._inner.finished(sequence)

    def stop(self) -> None:
        self._task.cancel()

    async def _beat(self) -> None:
        loop = self._loop
        try:
            while True:
                wait = self._last + self._interval - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                self._writer.write(KEEP_ALIVE)
                self._last = loop.time()
        except ConnectionError:
            pass  # the client is gone: the stream's own writes will find out
