"""HTTPS as vLLM serves it, checked with real TLS clients (the openai SDK, http.client, curl).

Certificates are made in each test (trustme); nothing is downloaded.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import trustme
from conftest import STARTUP_TIMEOUT, free_port_run, run_cli, stop_process

from llmsim.server.self_signed import make_self_signed

MODEL = "llmsim/sim-model"


class HTTPSServer:
    """``llmsim serve`` on a loopback port, ready once /health answers over TLS."""

    def __init__(
        self,
        args: list[str],
        tmp_path: Path,
        trusted: Path | None,
        client_cert: trustme.LeafCert | None = None,
    ) -> None:
        self.client_cert = client_cert
        self.port = free_port_run(2)
        self.log_path = tmp_path / f"llmsim-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMSIM_", "VLLM_"))}
        env.update({"TMPDIR": str(tmp_path), "COLUMNS": "400"})
        command = [sys.executable, "-m", "llmsim", "serve", "--port", str(self.port), *args]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.tmp_path = tmp_path
        self.trusted = trusted or self._made_ca()
        self._wait_healthy()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def context(self, client_cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.trusted))
        if client_cert is not None:
            client_cert.configure_cert(context)
        return context

    def _made_ca(self) -> Path:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            found = sorted(self.tmp_path.glob("llmsim-tls-*/ca.pem"))
            if found and self.process.poll() is None:
                return found[0]
            time.sleep(0.05)
        raise RuntimeError(self.log_path.read_text())

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.log_path.read_text())
            try:
                if get(self, "/health", self.context(self.client_cert)) == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(self.log_path.read_text())

    def stop(self) -> int:
        return stop_process(self.process, signal.SIGTERM)


def get(server: HTTPSServer, path: str, context: ssl.SSLContext) -> int:
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[type[HTTPSServer]]:
    started: list[HTTPSServer] = []

    class Started(HTTPSServer):
        def __init__(
            self,
            args: list[str],
            trusted: Path | None = None,
            client_cert: trustme.LeafCert | None = None,
        ) -> None:
            super().__init__(args, tmp_path, trusted, client_cert)
            started.append(self)

    yield Started  # type: ignore[misc]
    for server in started:
        server.stop()


def write_leaf(ca: trustme.CA, directory: Path, name: str) -> tuple[Path, Path]:
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


def test_a_self_signed_certificate_is_verified_by_the_openai_sdk_and_curl(
    https_server: type[HTTPSServer], tmp_path: Path
) -> None:
    server = https_server(["--self-signed-certs"])
    assert f"curl --cacert {server.trusted} https://127.0.0.1:{server.port}/" in (
        server.log_path.read_text()
    )
    client = openai.OpenAI(
        base_url=server.url + "/v1",
        api_key="unused",
        http_client=openai.DefaultHttpxClient(verify=server.context()),
    )
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert answer.choices[0].message.content
    localhost = openai.OpenAI(
        base_url=f"https://localhost:{server.port}/v1",
        api_key="unused",
        http_client=openai.DefaultHttpxClient(verify=server.context()),
    )
    assert [model.id for model in localhost.models.list()] == [MODEL]
    if shutil.which("curl"):
        curl = subprocess.run(
            ["curl", "-sS", "--cacert", str(server.trusted), server.url + "/v1/models"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert curl.returncode == 0, curl.stderr
        assert json.loads(curl.stdout)["data"][0]["id"] == MODEL
    untrusting = ssl.create_default_context()  # the system's CAs do not know this one
    with pytest.raises(ssl.SSLCertVerificationError):
        get(server, "/health", untrusting)
    assert server.stop() == 0
    assert not server.trusted.exists(), "the made certificate is removed on exit"


def test_data_parallel_ranks_serve_the_same_certificate(https_server: type[HTTPSServer]) -> None:
    server = https_server(["--self-signed-certs", "-dp", "2", "--dp-ports"])
    context = server.context()
    for port in (server.port, server.port + 1):
        connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=5)
        connection.request("GET", "/v1/models")
        assert connection.getresponse().status == 200
        connection.close()


def test_changed_files_are_served_to_new_connections_while_old_ones_live_on(
    https_server: type[HTTPSServer], tmp_path: Path
) -> None:
    first, second = trustme.CA(), trustme.CA()
    cert, key = write_leaf(first, tmp_path, "server")
    bundle = tmp_path / "both-cas.pem"
    bundle.write_bytes(first.cert_pem.bytes() + second.cert_pem.bytes())
    server = https_server(
        ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--enable-ssl-refresh"],
        trusted=bundle,
    )
    kept = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=server.context(), timeout=5
    )
    kept.request("GET", "/health")
    kept.getresponse().read()
    kept_socket = kept.sock

    new_cert, new_key = write_leaf(second, tmp_path, "renewed")
    os.replace(new_key, key)
    os.replace(new_cert, cert)
    only_second = ssl.create_default_context(cafile=None, cadata=second.cert_pem.bytes().decode())
    deadline = time.monotonic() + 10
    while True:
        try:
            assert get(server, "/health", only_second) == 200
            break
        except ssl.SSLCertVerificationError:
            assert time.monotonic() < deadline, "the renewed certificate was never served"
            time.sleep(0.1)
    with pytest.raises(ssl.SSLCertVerificationError):
        get(server, "/health", ssl.create_default_context(cadata=first.cert_pem.bytes().decode()))

    kept.request("GET", "/v1/models")
    response = kept.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["data"][0]["id"] == MODEL
    assert kept.sock is kept_socket, "the keep-alive connection survived the reload"
    kept.close()


def test_mutual_tls_refuses_a_client_without_a_certificate(
    https_server: type[HTTPSServer], tmp_path: Path
) -> None:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    cert, key = write_leaf(server_ca, tmp_path, "server")
    clients = tmp_path / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(clients))
    trusted = tmp_path / "server-ca.pem"
    server_ca.cert_pem.write_to_path(str(trusted))
    client_cert = client_ca.issue_cert("client@example.test")
    stranger = trustme.CA().issue_cert("stranger@example.test")

    args = ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    args += ["--ssl-ca-certs", str(clients), "--ssl-cert-reqs", str(int(ssl.CERT_REQUIRED))]
    server = https_server(args, trusted=trusted, client_cert=client_cert)
    for refused in (server.context(), server.context(stranger)):
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            get(server, "/health", refused)
    assert get(server, "/v1/models", server.context(client_cert)) == 200
    if shutil.which("curl"):
        identity = tmp_path / "client.pem"
        client_cert.private_key_and_cert_chain_pem.write_to_path(str(identity))
        curl = ["curl", "-sS", "--cacert", str(trusted), f"{server.url}/v1/models"]
        refused = subprocess.run(curl, capture_output=True, text=True, timeout=20, check=False)
        assert refused.returncode != 0
        accepted = subprocess.run(
            [*curl, "--cert", str(identity)],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert accepted.returncode == 0, accepted.stderr
        assert json.loads(accepted.stdout)["data"][0]["id"] == MODEL


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (("server.pem", "other-key.pem"), "does not match the certificate"),
        (("missing.pem", "server-key.pem"), "--ssl-certfile: file not found"),
        (("server.pem", "junk.pem"), "is not a PEM private key"),
        (("junk.pem", "server-key.pem"), "is not a PEM certificate"),
    ],
)
def test_unusable_files_stop_the_start_with_one_line_and_status_2(
    tmp_path: Path, files: tuple[str, str], message: str
) -> None:
    ca = trustme.CA()
    write_leaf(ca, tmp_path, "server")
    write_leaf(ca, tmp_path, "other")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    cert, key = (str(tmp_path / name) for name in files)
    result = run_cli("serve", "--port", "0", "--ssl-certfile", cert, "--ssl-keyfile", key)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert message in lines[0]


def test_a_made_certificate_names_localhost_and_the_hosts_given(tmp_path: Path) -> None:
    from cryptography import x509

    files = make_self_signed(tmp_path, hosts=["10.1.2.3", "0.0.0.0", "[::]", "llmsim-pod-0"])
    cert = x509.load_pem_x509_certificate(files.certfile.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "llmsim-pod-0"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
    ]
    assert oct(files.keyfile.stat().st_mode & 0o777) == "0o600", "the key is its owner's only"
    context = ssl.create_default_context(cafile=str(files.ca_certfile))
    context.load_cert_chain(files.certfile, files.keyfile)  # the key matches


def test_ssl_ciphers_limit_what_tls_1_2_negotiates(
    https_server: type[HTTPSServer], tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert, key = write_leaf(ca, tmp_path, "server")
    trusted = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(trusted))
    offered = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
    args = ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--ssl-ciphers", offered]
    server = https_server(args, trusted=trusted)

    def tls12(ciphers: str) -> ssl.SSLContext:
        context = server.context()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(ciphers)
        return context

    connection = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=tls12("ECDHE+AESGCM"), timeout=5
    )
    try:
        connection.request("GET", "/health")
        assert connection.getresponse().status == 200
        assert connection.sock is not None
        assert connection.sock.cipher()[0] in offered.split(":")  # not the AES256 one
    finally:
        connection.close()
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        get(server, "/health", tls12("ECDHE+AES256"))

    result = run_cli(
        "serve",
        "--port",
        "0",
        "--ssl-certfile",
        str(cert),
        "--ssl-keyfile",
        str(key),
        "--ssl-ciphers",
        "NO-SUCH-CIPHER",
    )
    assert result.returncode == 2
    assert "--ssl-ciphers: OpenSSL knows no cipher in 'NO-SUCH-CIPHER'" in result.stderr
