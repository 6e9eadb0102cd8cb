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
    instances: Sequence[Instance], backend: DataParallelBackend, console: Console | None = None
) -> int:
    """Serve until SIGINT or SIGTERM and return the exit status.

    Several instances on the ``mp`` backend get a process each; one instance, or the
    ``inprocess`` backend, runs on this process's event loop. Raises
    :class:`~llmsim.server.runner.ServerStartError` when a port cannot be bound.
    """
    if backend == "mp" and len(instances) > 1 and not hasattr(signal, "sigtimedwait"):
        logger.warning("this platform has no sigtimedwait (macOS): running all in one process")
        backend = "inprocess"
    if backend == "mp" and len(instances) > 1:
        from llmsim.pool.supervisor import Supervisor

        if any(instance.settings.dashboard for instance in instances):
            logger.warning(
                "--dashboard shows one process: use --data-parallel-backend inprocess to see it"
            )
        return Supervisor(instances, console).run()
    from llmsim.server.runner import Server

    Server(instances, console).run()
    return 0
