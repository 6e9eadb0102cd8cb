"""HTTPS as vLLM serves it: the server's SSL context and the reload of changed files.

vLLM hands ``--ssl-keyfile``, ``--ssl-certfile``, ``--ssl-ca-certs`` and ``--ssl-cert-reqs``
to uvicorn, which builds one server context from them; ``--enable-ssl-refresh`` then loads
the files again into that same context when they change. Loading into the live context is
what keeps connections open: a handshake made earlier keeps its session, the next one
gets the new certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from pathlib import Path

from llmsim.settings.model import Settings
from llmsim.settings.tls import tls_enabled

logger = logging.getLogger("llmsim.server")

REFRESH_POLL_SECONDS = 0.5
"""How often ``--enable-ssl-refresh`` looks at the files (a few stat calls)."""


class TLSError(Exception):
    """The certificate, key or CA files cannot be used; one line naming the flag."""


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The SSL context ``settings`` ask for, or None when HTTPS is off."""
    if not tls_enabled(settings) or settings.ssl_certfile is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_files(context, settings)
    context.verify_mode = ssl.VerifyMode(settings.ssl_cert_reqs)
    if settings.ssl_ciphers is not None:
        try:
            context.set_ciphers(settings.ssl_ciphers)
        except ssl.SSLError:
            raise TLSError(
                f"--ssl-ciphers: OpenSSL knows no cipher in {settings.ssl_ciphers!r}"
            ) from None
    return context


def load_files(context: ssl.SSLContext, settings: Settings) -> None:
    """Load the certificate chain, its key and the client CAs into ``context``."""
    certfile, keyfile = settings.ssl_certfile, settings.ssl_keyfile
    assert certfile is not None
    try:
        context.load_cert_chain(certfile, keyfile)
    except FileNotFoundError as exc:
        raise TLSError(f"file not found: {exc.filename}") from None
    except ssl.SSLError as exc:
        raise TLSError(_chain_error(exc, certfile, keyfile)) from None
    except OSError as exc:
        raise TLSError(f"--ssl-certfile: cannot read {certfile}: {exc.strerror}") from None
    if settings.ssl_ca_certs is not None:
        try:
            context.load_verify_locations(cafile=settings.ssl_ca_certs)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise TLSError(
                f"--ssl-ca-certs: no usable CA certificate in {settings.ssl_ca_certs} ({reason})"
            ) from None


def _chain_error(exc: ssl.SSLError, certfile: Path, keyfile: Path | None) -> str:
    """OpenSSL's reason, said in terms of the flags."""
    if exc.reason == "KEY_VALUES_MISMATCH":
        return f"--ssl-keyfile: the key {keyfile} does not match the certificate {certfile}"
    detail = f" ({exc.reason})" if exc.reason and exc.reason != "PEM_LIB" else ""
    if keyfile is not None and _is_certificate(certfile):
        return f"--ssl-keyfile: {keyfile} is not a PEM private key{detail}"
    if keyfile is None and _is_certificate(certfile):
        return f"--ssl-certfile: {certfile} holds no private key: give it with --ssl-keyfile"
    return f"--ssl-certfile: {certfile} is not a PEM certificate{detail}"


def _is_certificate(path: Path) -> bool:
    try:
        return b"-----BEGIN CERTIFICATE-----" in path.read_bytes()
    except OSError:
        return False


def check_tls(settings: Settings) -> None:
    """Raise :class:`TLSError` unless the files make a working server context."""
    server_context(settings)


class CertificateRefresher:
    """Reload the files into a live context when they change (``--enable-ssl-refresh``).

    Files are compared by modification time, size and inode, so a Kubernetes secret
    update (a symlink swapped to a new directory) counts as a change. A change that
    does not load (a certificate written before its key) is retried on the next look,
    and the context keeps the files it had until then.
    """

    def __init__(self, context: ssl.SSLContext, settings: Settings) -> None:
        self._context = context
        self._settings = settings
        paths = [settings.ssl_certfile, settings.ssl_keyfile, settings.ssl_ca_certs]
        self._paths = [path for path in paths if path is not None]
        self._seen = self._stamps()
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_POLL_SECONDS)
            self.check()

    def check(self) -> bool:
        """Reload if a file changed since the last successful load; True if reloaded."""
        stamps = self._stamps()
        if stamps == self._seen:
            return False
        try:
            load_files(self._context, self._settings)
        except TLSError as exc:
            logger.warning("TLS files changed but were not reloaded: %s", exc)
            return False
        self._seen = stamps
        self.reloads += 1
        logger.info("TLS certificate reloaded from %s", self._settings.ssl_certfile)
        return True

    def _stamps(self) -> list[tuple[int, int, int] | None]:
        stamps: list[tuple[int, int, int] | None] = []
        for path in self._paths:
            try:
                info = os.stat(path)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((info.st_mtime_ns, info.st_size, info.st_ino))
        return stamps
