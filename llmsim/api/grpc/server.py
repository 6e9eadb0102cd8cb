"""The gRPC listener of one instance, on the instance's event loop.

Serves vLLM's ``VllmEngine`` service, the standard ``grpc.health.v1.Health`` service
(Kubernetes gRPC probes: SERVING once the simulated model loaded, NOT_SERVING while
draining) and server reflection (``grpcurl`` needs no ``.proto``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from llmsim.api.admin.sleep import SLEEP
from llmsim.api.grpc.auth import ApiKeyInterceptor
from llmsim.api.grpc.generated import vllm_engine_pb2 as pb
from llmsim.api.grpc.generated import vllm_engine_pb2_grpc as pb_grpc
from llmsim.api.grpc.health import follow_lifecycle
from llmsim.api.grpc.servicer import VllmEngineServicer
from llmsim.api.http.keys import ENGINE, ENGINES, LIFECYCLE, RESPONDER, RUNTIME, SERVER_LOAD
from llmsim.runtime.sleep import SleepController
from llmsim.service.generation import ServiceState
from llmsim.settings.model import Settings

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["VllmEngine"].full_name
OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10000),
    ("grpc.keepalive_permit_without_calls", True),
    ("grpc.so_reuseport", 0),
]
"""vLLM's server options, but a request is bounded as an HTTP body is
(``--max-request-body-size``: RESOURCE_EXHAUSTED beyond it) and a taken port is an error."""


class GrpcStartError(Exception):
    """The gRPC port could not be bound."""


@dataclass
class GrpcDoor:
    """A running gRPC server and what stopping it needs."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    _watch: asyncio.Task[None]

    async def begin_drain(self) -> None:
        """Probes answer NOT_SERVING; new calls are refused UNAVAILABLE by the servicer."""
        self._watch.cancel()
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float | None) -> None:
        self._watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watch
        await self.server.stop(grace)


async def start_grpc(
    settings: Settings, state: ServiceState, sleep: SleepController | None, port: int
) -> GrpcDoor:
    """Bind ``settings.host:port`` and start serving; :class:`GrpcStartError` if it cannot."""
    api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    interceptors = [ApiKeyInterceptor(api_key)] if api_key else []
    limit = ("grpc.max_receive_message_length", int(settings.max_request_body_size))
    server = grpc.aio.server(options=[*OPTIONS, limit], interceptors=interceptors)
    pb_grpc.add_VllmEngineServicer_to_server(VllmEngineServicer(state, sleep), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    address = f"{_host(settings.host)}:{port}"
    check_free(settings.host, port)
    try:
        credentials = server_credentials(settings)
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise GrpcStartError(f"cannot listen for gRPC on {address}: {exc}") from None
    await server.start()
    watch = asyncio.ensure_future(follow_lifecycle(health_servicer, state.lifecycle, SERVICE_NAME))
    return GrpcDoor(server, bound, health_servicer, watch)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS with the HTTP server's certificate (``--ssl-certfile``, ``--ssl-keyfile``, or the
    one ``--self-signed-certs`` made); with ``--ssl-ca-certs`` and ``--ssl-cert-reqs 2``,
    clients must present a certificate signed by those CAs. None: plain gRPC.

    The files are read once: ``--enable-ssl-refresh`` reloads only the HTTP context, and
    grpc cannot ask for an optional client certificate (``--ssl-cert-reqs 1``).
    """
    certfile = settings.ssl_certfile
    if certfile is None:
        return None
    try:
        chain = certfile.read_bytes()
        key = settings.ssl_keyfile.read_bytes() if settings.ssl_keyfile is not None else chain
        ca = settings.ssl_ca_certs.read_bytes() if settings.ssl_ca_certs is not None else None
    except OSError as exc:
        raise GrpcStartError(f"gRPC TLS: cannot read {exc.filename}: {exc.strerror}") from None
    asks = settings.ssl_cert_reqs != 0 and ca is not None
    return grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=ca if asks else None,
        require_client_auth=asks and settings.ssl_cert_reqs == 2,
    )


def check_free(host: str, port: int) -> None:
    """The HTTP listener's one-line error for a port in use, before grpc's core logs its own."""
    if not port:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise GrpcStartError(f"cannot listen for gRPC on {host}:{port}: {reason.lower()}") from None


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def start_for_app(app: web.Application, settings: Settings) -> GrpcDoor:
    """The gRPC door of the server ``app`` is: its engines, lifecycle, faults, sleep, response
    rules and ``/load`` count."""
    engines = app[ENGINES]
    state = ServiceState(
        app[ENGINE],
        app[LIFECYCLE],
        app[RUNTIME],
        engines if len(engines.engines) > 1 else None,
        app[RESPONDER],
        app[SERVER_LOAD],
    )
    if settings.grpc_only:
        port = settings.port
    else:
        port = settings.grpc_port if settings.grpc_port is not None else 0
    return await start_grpc(settings, state, app.get(SLEEP), port)
