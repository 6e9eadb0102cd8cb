"""The image's health check: ``/health`` answers, over HTTP or HTTPS; for a server started
with ``--grpc`` (or ``LLMSIM_GRPC_ONLY``), gRPC's standard health service answers SERVING.

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


def server_argv() -> list[str]:
    try:
        return MAIN_PROCESS.read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def server_port(argv: list[str]) -> str:
    return port_of(argv) or os.environ.get("LLMSIM_PORT", "8000")


def serves_grpc_only(argv: list[str]) -> bool:
    """``--grpc`` on an llmsim command line, or the setting in the environment."""
    if any("llmsim" in arg for arg in argv[:3]) and "--grpc" in argv:
        return True
    return os.environ.get("LLMSIM_GRPC_ONLY", "").lower() in ("1", "true", "yes", "on")


def grpc_healthy(port: str) -> bool:
    try:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc
    except ImportError:
        return False
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def healthy(scheme: str, port: str) -> bool:
    context = ssl._create_unverified_context() if scheme == "https" else None
    url = f"{scheme}://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except OSError:
        return False


if __name__ == "__main__":
    argv = server_argv()
    port = server_port(argv)
    if serves_grpc_only(argv):
        raise SystemExit(0 if grpc_healthy(port) else 1)
    raise SystemExit(0 if healthy("http", port) or healthy("https", port) else 1)
