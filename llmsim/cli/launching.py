"""Starting instances for ``serve`` and ``fleet``: start-up checks, TLS files, logging, exit code."""

from __future__ import annotations

from collections.abc import Sequence

import typer
from rich.console import Console
from rich.markup import escape

from llmsim.cli.options import err, fail
from llmsim.pool.launch import launch
from llmsim.settings.instances import Instance
from llmsim.settings.model import DataParallelBackend, Settings


def _check_tokenizer(settings: Settings) -> None:
    """A tokenizer that cannot be loaded is a one-line start-up error (exit 2)."""
    if settings.tokenizer is None and settings.chat_template is None:
        return
    from llmsim.engine.tokenizer import TokenizerError, load_tokenizer

    try:
        load_tokenizer(settings.tokenizer, settings.chat_template)
    except TokenizerError as exc:
        raise fail([str(exc)]) from None


def launch_or_exit(
    instances: Sequence[Instance],
    backend: DataParallelBackend,
    log_level: str,
    workers: int | None = None,
) -> None:
    from llmsim.cli.tls import tls_files
    from llmsim.observability.logs import configure_logging
    from llmsim.server.runner import ServerStartError

    for instance in instances:
        _check_tokenizer(instance.settings)
    _check_grpc(instances)
    with tls_files(instances) as ready:
        console = Console()
        configure_logging(ready[0].settings.model_copy(update={"log_level": log_level}), console)
        try:
            code = launch(ready, backend, console, workers)
        except ServerStartError as exc:
            err.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:  # a second Ctrl-C during shutdown
            code = 0
    if code:
        raise typer.Exit(code)


def _check_grpc(instances: Sequence[Instance]) -> None:
    """``--grpc-port`` or ``--grpc`` without the grpc extra: one line naming it, exit status 2."""
    if all(
        instance.settings.grpc_port is None and not instance.settings.grpc_only
        for instance in instances
    ):
        return
    from llmsim.api.grpc.availability import missing_grpc

    problem = missing_grpc()
    if problem is not None:
        err.print(f"[bold red]error:[/bold red] {escape(problem)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
