"""A certificate made at start-up (``--self-signed-certs``): a CA and the server's certificate.

The server certificate names ``localhost``, ``127.0.0.1`` and ``::1`` (and any other host
given, such as the address the server binds or the machine's name) and is signed by a CA
made with it, so a client can verify the server with the CA file alone (``curl
--cacert``, ``httpx.Client(verify=...)``), as with a real private CA. The CA carries the
extensions strict verifiers ask for (Python 3.13's ``VERIFY_X509_STRICT``). Needs the
``cryptography`` package (``llmsim[tls]``).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmsim.settings.tls import SELF_SIGNED_CA_NAME, TLS_EXTRA

VALIDITY = datetime.timedelta(days=30)
CLOCK_SKEW = datetime.timedelta(hours=1)
HOST_NAMES = ("localhost",)
HOST_ADDRESSES = ("127.0.0.1", "::1")


class SelfSignedError(Exception):
    """The certificate could not be made or written; one line."""


@dataclass(frozen=True)
class SelfSignedFiles:
    certfile: Path
    keyfile: Path
    ca_certfile: Path


def make_self_signed(directory: Path | None = None, hosts: Sequence[str] = ()) -> SelfSignedFiles:
    """Write a fresh CA, server certificate and key into ``directory`` (a new temporary
    one); the certificate names ``hosts`` (names or addresses) besides localhost."""
    try:
        from cryptography import x509  # noqa: F401
    except ImportError:
        raise SelfSignedError(
            f"--self-signed-certs needs the cryptography package: pip install '{TLS_EXTRA}'"
        ) from None
    try:
        where = directory or Path(tempfile.mkdtemp(prefix="llmsim-tls-"))
        ca_key, ca_cert = _certificate_authority()
        key, cert = _server_certificate(ca_key, ca_cert, subject_names(hosts))
        files = SelfSignedFiles(
            where / "server.pem", where / "server-key.pem", where / SELF_SIGNED_CA_NAME
        )
        _write(files.ca_certfile, _pem_certificate(ca_cert))
        _write(files.certfile, _pem_certificate(cert))
        _write(files.keyfile, _pem_key(key), private=True)
    except OSError as exc:
        raise SelfSignedError(f"--self-signed-certs: cannot write the certificate: {exc}") from None
    return files


def _certificate_authority() -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmsim self-signed CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def subject_names(hosts: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(DNS names, IP addresses)``: localhost's, then ``hosts`` (wildcard binds skipped)."""
    names, addresses = list(HOST_NAMES), list(HOST_ADDRESSES)
    for host in hosts:
        host = host.strip().strip("[]")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            if host and host not in names:
                names.append(host)
            continue
        if not address.is_unspecified and str(address) not in addresses:
            addresses.append(str(address))
    return names, addresses


def _server_certificate(
    ca_key: Any, ca_cert: Any, subject: tuple[list[str], list[str]]
) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    dns_names, addresses = subject
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key_id = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _usage(*, cert_sign: bool) -> Any:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _pem_certificate(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(cert.public_bytes(serialization.Encoding.PEM))


def _pem_key(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write ``data``; a private key is readable by its owner only."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    descriptor = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
