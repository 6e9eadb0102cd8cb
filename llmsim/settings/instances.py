"""What one command runs: simulated vLLM instances, each a name, settings and a rank.

``llmsim serve`` runs one instance per data-parallel rank; ``llmsim fleet`` runs the
instances of a fleet file (each of which may itself be data-parallel). Both hand the
same list to :func:`llmsim.pool.launch.launch`.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmsim.settings.model import Settings


@dataclass(frozen=True)
class Instance:
    """One simulated vLLM server: its own port, scheduler, adapters and metrics."""

    name: str
    settings: Settings
    rank: int = 0
    """Data-parallel rank: the ``engine`` label of its metrics, like vLLM's DP ranks."""


def rank_name(name: str, rank: int) -> str:
    """``dp1`` for ``llmsim serve``, ``fast/dp1`` for a fleet instance named ``fast``."""
    return f"{name}/dp{rank}" if name else f"dp{rank}"


def data_parallel_instances(settings: Settings, name: str = "") -> list[Instance]:
    """One instance per data-parallel rank, on ports port .. port+N-1 (or all on 0)."""
    size = settings.data_parallel_size
    if size == 1:
        return [Instance(name, settings)]
    return [
        Instance(
            rank_name(name, rank),
            settings.model_copy(update=_rank_ports(settings, rank)),
            rank,
        )
        for rank in range(size)
    ]


def _rank_ports(settings: Settings, rank: int) -> dict[str, int | None]:
    """Rank ``rank``'s HTTP and gRPC ports: each base + rank, or 0 (a free one) for 0."""
    grpc_port = settings.grpc_port
    return {
        "port": settings.port + rank if settings.port else 0,
        "grpc_port": grpc_port + rank if grpc_port else grpc_port,
    }
