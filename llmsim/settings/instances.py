"""What one command runs: simulated vLLM servers, each a name, settings and engine ranks.

``llmsim serve`` runs one server in front of its data-parallel engines (or, with
``--dp-ports``, one server per rank); ``llmsim fleet`` runs the servers of a fleet file.
Both hand the same list to :func:`llmsim.pool.launch.launch`.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmsim.settings.data_parallel import data_parallel_layout
from llmsim.settings.model import Settings


@dataclass(frozen=True)
class Instance:
    """One simulated vLLM server: its own port, and one engine per data-parallel rank."""

    name: str
    settings: Settings
    ranks: tuple[int, ...] = (0,)
    """Data-parallel ranks of its engines: the ``engine`` labels of their metrics."""

    @property
    def rank(self) -> int:
        """The first engine's rank."""
        return self.ranks[0]


def rank_name(name: str, rank: int) -> str:
    """``dp1`` for ``llmsim serve``, ``fast/dp1`` for a fleet instance named ``fast``."""
    return f"{name}/dp{rank}" if name else f"dp{rank}"


def data_parallel_instances(settings: Settings, name: str = "") -> list[Instance]:
    """The servers ``settings`` ask for: one in front of every engine, or one per rank on
    ports port .. port+N-1 (or all on 0) with ``--dp-ports``."""
    layout = data_parallel_layout(settings)
    if layout.mode != "ports":
        return [Instance(name, settings, layout.ranks)]
    return [
        Instance(
            rank_name(name, rank),
            settings.model_copy(update=_rank_ports(settings, index)),
            (rank,),
        )
        for index, rank in enumerate(layout.ranks)
    ]


def _rank_ports(settings: Settings, index: int) -> dict[str, int | None]:
    """The HTTP and gRPC ports of the ``index``-th rank's server: each base + index, or 0
    (a free one) for 0."""
    grpc_port = settings.grpc_port
    return {
        "port": settings.port + index if settings.port else 0,
        "grpc_port": grpc_port + index if grpc_port else grpc_port,
    }
