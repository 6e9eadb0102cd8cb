"""The ceiling: the fastest aiohttp server this machine runs, with no logic at all.

It answers ``POST /v1/chat/completions`` with a fixed JSON body and ``POST /stream`` with
a fixed list of pre-built SSE writes, using the same server stack as llmsim (aiohttp on
uvloop when installed, no access log). What llmsim reaches relative to this app is the
share of the machine's HTTP capacity it keeps for itself.

``POST /timed`` sends the same writes on a latency schedule (``--ttft``, ``--itl``),
sleeping to absolute deadlines as llmsim does: under the same load it shows how much
timing error the platform itself adds (event loop, kernel, load generator).

    python benchmarks/ceiling_app.py --port 8001 --payload payload.json

``payload.json`` holds ``{"body": "<JSON text>", "writes": ["data: ...\\n\\n", ...]}``;
the runner captures both from a real llmsim response so the sizes match.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from llmsim.server.listener import GreedyAcceptSite, bind_listener

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def build_app(
    body: bytes, writes: list[bytes], ttft: float = 0.0, itl: float = 0.0
) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    async def stream(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        for data in writes:
            await response.write(data)
        await response.write_eof()
        return response

    async def timed(request: web.Request) -> web.StreamResponse:
        await request.read()
        deadline = time.monotonic() + ttft
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        for data in writes:
            if data.startswith(b"data: [DONE]"):  # follows the last token at once
                await response.write(data)
                continue
            delay = deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await response.write(data)
            deadline += itl
        await response.write_eof()
        return response

    app = web.Application()
    app.add_routes(
        [
            web.get("/health", health),
            web.post("/v1/chat/completions", chat),
            web.post("/stream", stream),
            web.post("/timed", timed),
        ]
    )
    return app


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


async def serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        # The same listener as llmsim: uvloop alone accepts one connection per loop turn.
        site = GreedyAcceptSite(runner, bind_listener(host, port))
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--payload", type=Path, required=True, help="JSON: body and writes")
    parser.add_argument("--ttft", type=float, default=0.0, help="/timed: first write (s)")
    parser.add_argument("--itl", type=float, default=0.0, help="/timed: between writes (s)")
    args = parser.parse_args()
    payload = json.loads(args.payload.read_text(encoding="utf-8"))
    body = payload["body"].encode()
    writes = [item.encode() for item in payload["writes"]]
    loop = loop_factory()()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(
            serve(build_app(body, writes, args.ttft, args.itl), args.host, args.port)
        )
    finally:
        loop.close()


if __name__ == "__main__":
    main()
