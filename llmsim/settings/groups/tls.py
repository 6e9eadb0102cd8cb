"""vLLM's ``--ssl-*`` flags and the vLLM flags accepted without effect."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field
from pydantic_settings import NoDecode

from llmsim.settings.field_types import as_list, existing_file


class TlsFields(BaseModel):
    """vLLM's ``--ssl-*`` flags and the vLLM flags accepted without effect."""

    # -- TLS (vLLM's --ssl-* flags) ------------------------------------------------
    ssl_keyfile: Annotated[Path | None, AfterValidator(existing_file)] = Field(
        None,
        description="Private key (PEM) of the TLS certificate; serve HTTPS. Needs ssl-certfile.",
    )
    ssl_certfile: Annotated[Path | None, AfterValidator(existing_file)] = Field(
        None,
        description="TLS certificate chain (PEM) to serve HTTPS with; may hold the key too.",
    )
    ssl_ca_certs: Annotated[Path | None, AfterValidator(existing_file)] = Field(
        None,
        description="CA certificates (PEM) that client certificates are checked against "
        "(mutual TLS, with ssl-cert-reqs).",
    )
    ssl_cert_reqs: int = Field(
        0,
        ge=0,
        le=2,
        description="Client certificates, as Python's ssl module numbers them: 0 not asked "
        "for, 1 checked if sent, 2 required (mutual TLS).",
    )
    ssl_ciphers: str | None = Field(
        None,
        min_length=1,
        description="The cipher suites HTTPS offers with TLS 1.2 and older, in OpenSSL's list "
        "form (vLLM's --ssl-ciphers, e.g. ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-"
        "POLY1305); TLS 1.3 keeps its own. Unset: OpenSSL's defaults.",
    )
    enable_ssl_refresh: bool = Field(
        False,
        description="Reload the certificate, key and CA files when they change, without a "
        "restart or dropping connections.",
    )
    self_signed_certs: bool = Field(
        False,
        description="Serve HTTPS with a certificate made at start-up for localhost, "
        "127.0.0.1, the host bound and this machine's name; the banner says where its CA is "
        "written. Needs llmsim[tls].",
    )

    vllm_flags_without_effect: Annotated[list[str], NoDecode, BeforeValidator(as_list)] = Field(
        default_factory=list,
        description="vLLM flags given on the command line that llmsim accepts but that change "
        "nothing here (filled in from a `vllm serve` command line; shown in the start-up panel "
        "and by `llmsim config show`).",
    )
