"""A load generator for OpenAI-style chat endpoints, run as its own process.

It keeps ``--concurrency`` slots busy. Each slot starts at its own offset within
``--ramp`` (so connections and streams open gradually), then sends requests back to
back until it has sent ``--max-per-slot`` of them or the measuring window has ended.
Everything is bounded: the window, the count per slot, each request
(``--request-timeout``) and the whole process (``--hard-timeout``).

    python benchmarks/loadgen.py --url http://127.0.0.1:8000/v1/chat/completions \\
        --body '{"messages": [...], "max_tokens": 64}' --concurrency 64 --duration 5

The measuring window starts ``--warmup`` seconds after the start. Throughput counts
what completes inside it: responses (non-streaming) or content chunks (streaming, an
SSE event whose ``delta.content`` is a non-empty string). With ``--timings`` every
stream sent inside the window records its time to first token (from just before the
request is sent to the arrival of the first content chunk) and the gaps between its
content chunks. Chunks that arrive in one read count as arriving together.

Two clients: ``--client raw`` (the default, :mod:`rawclient`) parses HTTP/1.1 in the
protocol callback and timestamps each read there, so it takes little CPU from the
server it measures; ``--client aiohttp`` uses aiohttp's client session, for comparison.

One JSON object is printed on stdout at the end; latencies are histograms with 10 µs
bins that the runner merges across processes (see :class:`Histogram`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from rawclient import (
    BodyCallback,
    ProtocolError,
    RawConnection,
    build_request,
    open_connection,
)

BIN_SECONDS = 1e-5
"""Histogram resolution: 10 µs."""
MAX_ERROR_SAMPLES = 5
HEADERS = {"Content-Type": "application/json"}


class Histogram:
    """Counts of values in 10 µs bins plus the exact count, sum, minimum and maximum."""

    def __init__(self) -> None:
        self.bins: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf

    def add(self, value: float) -> None:
        key = int(value / BIN_SECONDS)
        self.bins[key] = self.bins.get(key, 0) + 1
        self.count += 1
        self.total += value
        if value < self.minimum:
            self.minimum = value
        if value > self.maximum:
            self.maximum = value

    def merge(self, other: Histogram) -> None:
        for key, count in other.bins.items():
            self.bins[key] = self.bins.get(key, 0) + count
        self.count += other.count
        self.total += other.total
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def percentile(self, q: float) -> float:
        """The value below which ``q`` percent of the values lie (bin centre, clamped)."""
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(self.count * q / 100.0))
        seen = 0
        for key in sorted(self.bins):
            seen += self.bins[key]
            if seen >= rank:
                value = (key + 0.5) * BIN_SECONDS
                return min(max(value, self.minimum), self.maximum)
        return self.maximum

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sum": self.total,
            "min": self.minimum if self.count else None,
            "max": self.maximum if self.count else None,
            "bins": [[key, count] for key, count in sorted(self.bins.items())],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        hist = cls()
        hist.bins = {int(key): int(count) for key, count in data["bins"]}
        hist.count = int(data["count"])
        hist.total = float(data["sum"])
        if hist.count:
            hist.minimum = float(data["min"])
            hist.maximum = float(data["max"])
        return hist


def is_content_event(event: bytes) -> bool:
    """An SSE event that carries a non-empty ``content`` string (not the role chunk)."""
    at = event.find(b'"content":"')
    return at >= 0 and event[at + 11 : at + 12] != b'"'


class StreamReadout:
    """Counts one stream's content events as its reads arrive, and times them."""

    __slots__ = ("chunks", "done", "last", "pending", "record", "sent", "stats", "w0", "w1")

    def __init__(self, stats: Stats, w0: float, w1: float, sent: float, record: bool) -> None:
        self.stats, self.w0, self.w1 = stats, w0, w1
        self.sent, self.record = sent, record
        self.pending = b""
        self.chunks = 0
        self.last = sent
        self.done = False

    def feed(self, data: bytes, now: float) -> None:
        pending = self.pending + data if self.pending else data
        if b"\n\n" not in pending:
            self.pending = pending
            return
        events = pending.split(b"\n\n")
        self.pending = events.pop()
        count = 0
        for event in events:
            if is_content_event(event):
                count += 1
            elif event.startswith(b"data: [DONE]"):
                self.done = True
        if not count:
            return
        stats = self.stats
        if self.w0 <= now < self.w1:
            stats.window_chunks += count
        if self.record:
            if self.chunks == 0:
                stats.ttft.add(now - self.sent)
            else:
                stats.itl.add(now - self.last)
            for _ in range(count - 1):
                stats.itl.add(0.0)
        self.chunks += count
        self.last = now


@dataclass
class Config:
    url: str
    body: bytes
    stream: bool
    concurrency: int
    ramp: float
    warmup: float
    duration: float
    max_per_slot: int
    timings: bool
    prewarm: bool
    start_at: float
    request_timeout: float
    client: str = "raw"


@dataclass
class Stats:
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    window_requests: int = 0
    window_chunks: int = 0
    chunks_total: int = 0
    open_now: int = 0
    peak_open: int = 0
    latency: Histogram = field(default_factory=Histogram)
    ttft: Histogram = field(default_factory=Histogram)
    itl: Histogram = field(default_factory=Histogram)

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(f"{kind}: {detail}"[:300])


class LoadGenerator:
    def __init__(self, config: Config, session: Any, clock: Callable[[], float]) -> None:
        """``session`` is an aiohttp client session, or None for the raw client."""
        self.config = config
        self.session = session
        self.clock = clock
        self.host, self.port, self.request = build_request(config.url, config.body)
        self.connections: dict[int, RawConnection] = {}
        self.stats = Stats()
        self.begin = 0.0
        self.window_start = 0.0
        self.window_end = 0.0
        self.cpu_marks: dict[str, tuple[float, float]] = {}
        """(CPU seconds, clock) at "begin", "window_start", "window_end" and "end"."""

    async def run(self) -> None:
        cfg = self.config
        now = self.clock()
        self.begin = now + max(0.0, cfg.start_at - time.time())
        self.window_start = self.begin + cfg.warmup
        self.window_end = self.window_start + cfg.duration
        delay = self.begin - self.clock()
        if delay > 0:
            await asyncio.sleep(delay)
        self._mark("begin")
        loop = asyncio.get_running_loop()
        handles = [
            loop.call_later(max(0.0, when - self.clock()), self._mark, name)
            for name, when in (("window_start", self.window_start), ("window_end", self.window_end))
        ]
        slots = [self._slot(index) for index in range(cfg.concurrency)]
        await asyncio.gather(*slots)
        self._mark("end")
        for handle in handles:
            handle.cancel()
        self.cpu_marks.setdefault("window_end", self.cpu_marks["end"])

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()

    def _mark(self, name: str) -> None:
        self.cpu_marks[name] = (cpu_seconds(), self.clock())

    def cpu_report(self) -> dict[str, float]:
        """CPU seconds and wall seconds of the whole run and of the measuring window."""
        marks = self.cpu_marks
        begin, end = marks["begin"], marks["end"]
        start = marks.get("window_start", end)
        stop = marks.get("window_end", end)
        return {
            "cpu_seconds": end[0] - begin[0],
            "wall_seconds": end[1] - begin[1],
            "window_cpu_seconds": stop[0] - start[0],
            "window_wall_seconds": stop[1] - start[1],
        }

    async def _slot(self, index: int) -> None:
        cfg = self.config
        offset = cfg.ramp * index / cfg.concurrency if cfg.concurrency else 0.0
        delay = self.begin + offset - self.clock()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = 0
        while sent < cfg.max_per_slot and self.clock() < self.window_end:
            sent += 1
            if cfg.stream:
                await self._stream_request(index)
            else:
                await self._plain_request(index)

    async def _post(self, slot: int, on_body: BodyCallback | None) -> tuple[int, bytes]:
        """POST the body; return the status and the body (empty if ``on_body`` read it)."""
        if self.session is None:
            connection = self.connections.get(slot)
            if connection is None or connection.closed:
                connection = await open_connection(self.host, self.port, self.clock)
                self.connections[slot] = connection
            return await connection.send(self.request, on_body, self.config.request_timeout)
        async with self.session.post(
            self.config.url, data=self.config.body, headers=HEADERS
        ) as response:
            if response.status != 200 or on_body is None:
                return response.status, await response.read()
            clock = self.clock
            async for data in response.content.iter_any():
                on_body(data, clock())
            return 200, b""

    async def _plain_request(self, slot: int) -> None:
        stats, clock = self.stats, self.clock
        stats.sent += 1
        started = clock()
        try:
            status, data = await self._post(slot, None)
        except (asyncio.TimeoutError, TimeoutError):
            stats.error("timeout")
            return
        except (aiohttp.ClientError, OSError, ProtocolError) as exc:
            stats.error(type(exc).__name__, str(exc))
            return
        now = clock()
        if status != 200:
            stats.error(f"http_{status}", data[:200].decode(errors="replace"))
            return
        if b'"choices"' not in data:
            stats.error("bad_body", data[:200].decode(errors="replace"))
            return
        stats.ok += 1
        if self.window_start <= now < self.window_end:
            stats.window_requests += 1
            stats.latency.add(now - started)

    async def _stream_request(self, slot: int) -> None:
        stats = self.stats
        stats.sent += 1
        stats.open_now += 1
        stats.peak_open = max(stats.peak_open, stats.open_now)
        sent = self.clock()
        record = self.config.timings and self.window_start <= sent < self.window_end
        readout = StreamReadout(stats, self.window_start, self.window_end, sent, record)
        try:
            status, data = await self._post(slot, readout.feed)
        except (asyncio.TimeoutError, TimeoutError):
            stats.error("timeout")
            return
        except (aiohttp.ClientError, OSError, ProtocolError) as exc:
            stats.error(type(exc).__name__, str(exc))
            return
        finally:
            stats.open_now -= 1
            stats.chunks_total += readout.chunks
        if status != 200:
            stats.error(f"http_{status}", data[:200].decode(errors="replace"))
        elif not readout.done:
            stats.error("truncated", f"{readout.chunks} content chunks, no [DONE]")
        elif readout.chunks == 0:
            stats.error("no_content")
        else:
            stats.ok += 1
            if self.window_start <= readout.last < self.window_end:
                stats.window_requests += 1

    async def prewarm(self) -> None:
        """Open one keep-alive connection per slot (all at once)."""
        if self.session is None:
            opened = await asyncio.gather(
                *(
                    open_connection(self.host, self.port, self.clock)
                    for _ in range(self.config.concurrency)
                )
            )
            self.connections = dict(enumerate(opened))
            return
        # aiohttp opens a connection with a request: GET /health.
        base = self.config.url.split("/", 3)
        health = "/".join(base[:3]) + "/health"

        async def one() -> None:
            async with self.session.get(health) as response:
                await response.read()

        await asyncio.gather(*(one() for _ in range(self.config.concurrency)))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main_async(cfg: Config) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        session = None
        if cfg.client == "aiohttp":
            connector = aiohttp.TCPConnector(
                limit=cfg.concurrency,
                limit_per_host=0,
                keepalive_timeout=120,
                enable_cleanup_closed=False,
            )
            session = await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=connector,
                    timeout=aiohttp.ClientTimeout(total=cfg.request_timeout),
                    auto_decompress=False,
                )
            )
        gen = LoadGenerator(cfg, session, time.perf_counter)
        stack.callback(gen.close)
        prewarm_error = None
        if cfg.prewarm:
            try:
                await gen.prewarm()
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                prewarm_error = f"{type(exc).__name__}: {exc}"
        late = time.time() - cfg.start_at
        await gen.run()
    stats = gen.stats
    offset = time.time() - time.perf_counter()
    return {
        "sent": stats.sent,
        "ok": stats.ok,
        "errors": stats.errors,
        "error_samples": stats.error_samples,
        "prewarm_error": prewarm_error,
        "late_start_seconds": max(0.0, late),
        "window": {
            "start": gen.window_start + offset,
            "end": gen.window_end + offset,
            "seconds": cfg.duration,
        },
        "window_requests": stats.window_requests,
        "window_chunks": stats.window_chunks,
        "chunks_total": stats.chunks_total,
        "peak_open": stats.peak_open,
        **gen.cpu_report(),
        "latency": stats.latency.to_json(),
        "ttft": stats.ttft.to_json(),
        "itl": stats.itl.to_json(),
    }


def parse_args(argv: list[str] | None = None) -> tuple[Config, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="request body (JSON text)")
    parser.add_argument("--stream", action="store_true", help="read the response as SSE")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--ramp", type=float, default=0.0, help="spread slot starts (s)")
    parser.add_argument("--warmup", type=float, default=0.0, help="before the window (s)")
    parser.add_argument("--duration", type=float, default=5.0, help="measuring window (s)")
    parser.add_argument("--max-per-slot", type=int, default=1_000_000)
    parser.add_argument("--timings", action="store_true", help="record TTFT and ITL")
    parser.add_argument("--prewarm", action="store_true", help="open connections first")
    parser.add_argument("--start-at", type=float, default=0.0, help="wall-clock start (epoch)")
    parser.add_argument("--request-timeout", type=float, default=60.0)
    parser.add_argument("--hard-timeout", type=float, default=600.0)
    parser.add_argument(
        "--client",
        choices=("raw", "aiohttp"),
        default="raw",
        help="raw: a lean HTTP/1.1 protocol (default); aiohttp: aiohttp's client session",
    )
    args = parser.parse_args(argv)
    cfg = Config(
        url=args.url,
        body=args.body.encode(),
        stream=args.stream,
        concurrency=max(1, args.concurrency),
        ramp=max(0.0, args.ramp),
        warmup=max(0.0, args.warmup),
        duration=max(0.0, args.duration),
        max_per_slot=max(1, args.max_per_slot),
        timings=args.timings,
        prewarm=args.prewarm,
        start_at=args.start_at or time.time(),
        request_timeout=args.request_timeout,
        client=args.client,
    )
    return cfg, args.hard_timeout


def main(argv: list[str] | None = None) -> int:
    cfg, hard_timeout = parse_args(argv)
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        result = loop.run_until_complete(asyncio.wait_for(main_async(cfg), hard_timeout))
    except asyncio.TimeoutError:
        print(json.dumps({"fatal": f"hard timeout of {hard_timeout}s reached"}))
        return 1
    finally:
        loop.close()
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
