"""Data-parallel layouts: which engines one ``llmsim serve`` runs, behind how many ports.

vLLM decides this in ``vllm/entrypoints/cli/serve.py`` and ``EngineArgs.create_engine_config``:

- internal load balancing (the default): one API server, every rank's engine behind it;
- external (``--data-parallel-rank R`` or ``--data-parallel-external-lb``): this server is
  rank R alone, and something outside balances between the ranks' servers;
- hybrid (``--data-parallel-hybrid-lb`` or ``--data-parallel-start-rank S``, with
  ``--data-parallel-size-local L``): one API server per node in front of its ranks S..S+L-1.

llmsim adds ``--dp-ports``: one server per rank on consecutive ports (its older layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from llmsim.settings.model import Settings

Mode = Literal["internal", "external", "hybrid", "ports"]


@dataclass(frozen=True)
class DataParallelLayout:
    """The engines' ranks (their ``engine`` labels) and how they are served."""

    mode: Mode
    ranks: tuple[int, ...]

    @property
    def port_count(self) -> int:
        """Ports the layout listens on: one per rank with ``--dp-ports``, else one."""
        return len(self.ranks) if self.mode == "ports" else 1


def data_parallel_layout(settings: Settings) -> DataParallelLayout:
    """The layout ``settings`` ask for (already checked by :func:`data_parallel_problem`)."""
    size, local = settings.data_parallel_size, settings.data_parallel_size_local
    rank = settings.data_parallel_rank
    if settings.data_parallel_external_lb or rank is not None:
        return DataParallelLayout("external", (rank or 0,))
    ranks = tuple(range(size))
    mode: Mode = "internal"
    hybrid = settings.data_parallel_hybrid_lb or settings.data_parallel_start_rank is not None
    if hybrid and local is not None and 0 < local < size:
        start = settings.data_parallel_start_rank or 0
        if local == 1:  # vLLM switches a one-rank node to external balancing
            return DataParallelLayout("external", (start,))
        ranks, mode = tuple(range(start, start + local)), "hybrid"
    if settings.dp_ports and size > 1:
        mode = "ports"
    return DataParallelLayout(mode, ranks)


def data_parallel_problem(settings: Settings) -> tuple[str, str] | None:
    """``(field, message)`` for flags that do not make one layout, as vLLM refuses them."""
    size, local = settings.data_parallel_size, settings.data_parallel_size_local
    rank, start = settings.data_parallel_rank, settings.data_parallel_start_rank
    external = settings.data_parallel_external_lb or rank is not None
    if external and (settings.data_parallel_hybrid_lb or start is not None):
        return (
            "data_parallel_rank" if rank is not None else "data_parallel_external_lb",
            "cannot use both external and hybrid data-parallel load balancing: external is "
            "--data-parallel-external-lb or --data-parallel-rank, hybrid is "
            "--data-parallel-hybrid-lb or --data-parallel-start-rank",
        )
    if settings.data_parallel_external_lb and rank is None:
        return ("data_parallel_external_lb", "needs --data-parallel-rank")
    if rank is not None and rank >= size:
        return ("data_parallel_rank", f"must be smaller than data-parallel-size ({size})")
    if rank is not None and local not in (None, 1):
        return ("data_parallel_size_local", "must be 1 or unset when data-parallel-rank is set")
    if local is not None and local > size:
        return ("data_parallel_size_local", f"cannot exceed data-parallel-size ({size})")
    if settings.data_parallel_hybrid_lb and local is None:
        return ("data_parallel_hybrid_lb", "needs --data-parallel-size-local")
    if start is not None and local is not None and start + local > size:
        return (
            "data_parallel_start_rank",
            f"ranks {start}..{start + local - 1} go past data-parallel-size ({size})",
        )
    if settings.dp_ports and external:
        return ("dp_ports", "serves every rank itself: drop --data-parallel-rank")
    return None
