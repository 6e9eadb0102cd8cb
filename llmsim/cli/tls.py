"""HTTPS at start-up: make the ``--self-signed-certs`` files and check every instance's files.

A missing file, a key that does not match its certificate or a file that is not PEM is
one line and exit status 2 before any port opens, like any other bad setting. Every
instance (data-parallel ranks, fleet members) that asks for a self-signed certificate
gets the same one, so one CA file verifies them all; it is removed on exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import socket
from collections.abc import Iterator, Sequence

from llmsim.cli.options import fail
from llmsim.server.self_signed import SelfSignedError, SelfSignedFiles, make_self_signed
from llmsim.server.tls import TLSError, check_tls
from llmsim.settings.instances import Instance
from llmsim.settings.model import Settings


@contextlib.contextmanager
def tls_files(instances: Sequence[Instance]) -> Iterator[list[Instance]]:
    """``instances`` with usable TLS files, made if asked; exits with status 2 if not."""
    made: SelfSignedFiles | None = None
    try:
        ready = []
        for instance in instances:
            settings = instance.settings
            if settings.self_signed_certs:
                made = made or _make([item.settings.host for item in instances])
                settings = settings.model_copy(
                    update={"ssl_certfile": made.certfile, "ssl_keyfile": made.keyfile}
                )
            _check(instance.name, settings)
            ready.append(dataclasses.replace(instance, settings=settings))
        yield ready
    finally:
        if made is not None:
            shutil.rmtree(made.certfile.parent, ignore_errors=True)


def _make(hosts: list[str]) -> SelfSignedFiles:
    """The certificate also names the hosts bound and this machine (a pod's name)."""
    try:
        return make_self_signed(hosts=[*hosts, socket.gethostname()])
    except SelfSignedError as exc:
        raise fail([str(exc)]) from None


def _check(name: str, settings: Settings) -> None:
    try:
        check_tls(settings)
    except TLSError as exc:
        raise fail([f"{name}: {exc}" if name else str(exc)]) from None
