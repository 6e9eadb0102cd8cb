"""TLS settings that only make sense together, and where a self-signed CA is written.

The certificates themselves are loaded by :mod:`llmsim.server.tls`; this module only
checks the combination of flags, so a wrong one is a settings error like any other.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmsim.settings.model import Settings

TLS_EXTRA = "llmsim[tls]"
SELF_SIGNED_CA_NAME = "ca.pem"
"""The self-signed CA's file, next to the certificate it signed."""


def tls_conflict(settings: Settings) -> tuple[str, str] | None:
    """``(field, reason)`` of the first TLS flags that do not go together, or None."""
    if settings.self_signed_certs:
        if settings.ssl_certfile is not None or settings.ssl_keyfile is not None:
            return "self_signed_certs", "cannot be combined with --ssl-certfile/--ssl-keyfile"
        if find_spec("cryptography") is None:
            return "self_signed_certs", f"making a certificate needs the extra: {TLS_EXTRA}"
    elif settings.ssl_keyfile is not None and settings.ssl_certfile is None:
        return "ssl_keyfile", "needs --ssl-certfile, the certificate the key belongs to"
    return None


def tls_enabled(settings: Settings) -> bool:
    """HTTPS is served: a certificate is given or made at start-up."""
    return settings.ssl_certfile is not None or settings.self_signed_certs


def self_signed_ca(settings: Settings) -> Path | None:
    """Where the CA of a certificate made at start-up was written (None otherwise)."""
    if not settings.self_signed_certs or settings.ssl_certfile is None:
        return None
    return settings.ssl_certfile.parent / SELF_SIGNED_CA_NAME
