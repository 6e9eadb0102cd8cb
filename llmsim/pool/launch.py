"""Run a list of instances on the chosen backend; the one entry point of the CLI."""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence

from rich.console import Console

from llmsim.settings.instances import Instance
from llmsim.settings.model import DataParallelBackend

logger = logging.getLogger("llmsim.launch")


def launch(
    instances: Sequence[Instance],
    backend: DataParallelBackend,
    console: Console | None = None,
    workers: int | None = None,
) -> int:
    """Serve until SIGINT or SIGTERM and return the exit status.

    Several instances on the ``mp`` backend get a process each; on the ``workers``
    backend they are spread over ``workers`` processes (default: one per core), each
    serving its share on one event loop. One instance, or the ``inprocess`` backend,
    runs on this process's event loop. Raises
    :class:`~llmsim.server.runner.ServerStartError` when a port cannot be bound.
    """
    if workers is not None and backend != "workers":
        logger.warning("--workers applies to --data-parallel-backend workers only: ignored")
    forking = backend in ("mp", "workers") and len(instances) > 1
    if forking and not hasattr(signal, "sigtimedwait"):
        logger.warning("this platform has no sigtimedwait (macOS): running all in one process")
        forking = False
    if forking and any(instance.settings.grpc_only for instance in instances):
        from llmsim.server.runner import ServerStartError

        raise ServerStartError(
            "--grpc serves one process's instances: use --data-parallel-backend inprocess"
        )
    if forking:
        from llmsim.pool.spread import spread, worker_count
        from llmsim.pool.supervisor import Supervisor

        if any(instance.settings.dashboard for instance in instances):
            logger.warning(
                "--dashboard shows one process: use --data-parallel-backend inprocess to see it"
            )
        if backend == "mp":
            return Supervisor([[instance] for instance in instances], console).run()
        count = worker_count(workers, len(instances))
        how = f"{count} worker process{'es' if count > 1 else ''}"
        return Supervisor(spread(instances, count), console, how=how).run()
    from llmsim.server.runner import Server

    Server(instances, console).run()
    return 0
