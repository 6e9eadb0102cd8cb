"""The image's health check: ``/health`` answers, over HTTP or HTTPS.

The port is the one the server was started with: ``--port N`` on the container's main
process (llmsim, which ``vllm serve`` replaced itself with), else ``LLMSIM_PORT``, else
8000. The slim image has no curl. A server started with ``--ssl-certfile`` or
``--self-signed-certs`` answers HTTPS only; the check does not verify its certificate,
it only asks whether the server is up.
"""

from __future__ import annotations

import os
import ssl
import urllib.request
from pathlib import Path

MAIN_PROCESS = Path("/proc/1/cmdline")


def port_of(argv: list[str]) -> str | None:
    """The value of the last ``--port`` in an llmsim command line, if any."""
    if not any("llmsim" in arg for arg in argv[:3]):
        return None
    found = None
    for index, arg in enumerate(argv):
        if arg == "--port" and index + 1 < len(argv):
            found = argv[index + 1]
        elif arg.startswith("--port="):
            found = arg.partition("=")[2]
    return found


def server_port() -> str:
    try:
        argv = MAIN_PROCESS.read_bytes().decode(errors="replace").split("\0")
    except OSError:
        argv = []
    return port_of(argv) or os.environ.get("LLMSIM_PORT", "8000")


def healthy(scheme: str, port: str) -> bool:
    context = ssl._create_unverified_context() if scheme == "https" else None
    url = f"{scheme}://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except OSError:
        return False


if __name__ == "__main__":
    port = server_port()
    raise SystemExit(0 if healthy("http", port) or healthy("https", port) else 1)
