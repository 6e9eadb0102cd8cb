"""``llmsim record``: put a recording proxy in front of a real server."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Annotated

import typer

from llmsim.cli.options import err, fail


def record(
    upstream: Annotated[
        str,
        typer.Option(
            "--upstream",
            help="Base URL of the server to record (vLLM, or any OpenAI-compatible).",
            metavar="URL",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", help="JSONL file to append one line per request to.", metavar="FILE"),
    ],
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on.", metavar="HOST")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="Port to listen on.", metavar="INT", min=0, max=65535)
    ] = 8000,
) -> None:
    """Forward chat and completions requests to --upstream unchanged and record each answer.

    Each request adds a JSON line to --out: the request, the answer text and tool calls,
    usage, finish reason, the upstream's time to first token and its inter-token gaps
    (errors too). Replay the file with `llmsim serve --replay FILE`.
    """
    from aiohttp import web

    from llmsim.proxy.record import create_record_app

    parts = urllib.parse.urlsplit(upstream)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise fail([f"--upstream must be an http:// or https:// URL, not {upstream!r}"])
    if out.is_dir():
        raise fail([f"--out: {out} is a directory"])
    err.print(f"recording {upstream} on http://{host}:{port} into {out}", highlight=False)
    try:
        web.run_app(
            create_record_app(upstream, out), host=host, port=port, print=None, access_log=None
        )
    except OSError as exc:
        raise fail([f"cannot listen on {host}:{port}: {exc.strerror}"], code=1) from None
