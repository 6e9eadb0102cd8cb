"""Whether the ``grpc`` extra is installed, checked before anything imports it.

The check finds the packages without importing them: grpc's core must not be loaded in a
process that then forks (the ``mp`` data-parallel backend), or the children's gRPC servers
never start.
"""

from __future__ import annotations

import importlib.util

REQUIRED = ("grpc", "google.protobuf", "grpc_health.v1", "grpc_reflection.v1alpha")
MISSING_EXTRA = (
    "--grpc-port needs the grpc extra: pip install 'llmsim[grpc]' "
    "(grpcio, protobuf, grpcio-health-checking, grpcio-reflection)"
)


def missing_grpc() -> str | None:
    """None when the gRPC packages are installed; else the one line to print."""
    for name in REQUIRED:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return MISSING_EXTRA
    return None
