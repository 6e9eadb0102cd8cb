"""``--api-key`` for gRPC: ``authorization: Bearer KEY`` metadata on the engine's RPCs.

As on HTTP, where ``/health`` needs no key, the probes stay open: the standard health
service, reflection and ``HealthCheck``.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

UNAUTHORIZED = "Unauthorized: a valid 'authorization: Bearer <key>' metadata is required."
PROTECTED_PREFIX = "/vllm.grpc.engine.VllmEngine/"
OPEN_METHODS = frozenset({"/vllm.grpc.engine.VllmEngine/HealthCheck"})


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, api_key: str) -> None:
        self._expected = api_key.encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or not method.startswith(PROTECTED_PREFIX) or method in OPEN_METHODS:
            return handler
        if self._authorized(details.invocation_metadata or ()):
            return handler
        return _denied(handler)

    def _authorized(self, metadata: Any) -> bool:
        """``Bearer KEY`` (the scheme in any case, the key exactly), as on HTTP."""
        for key, value in metadata:
            if key == "authorization":
                text = value if isinstance(value, str) else bytes(value).decode(errors="replace")
                scheme, _, given = text.strip().partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(
                    given.strip().encode(), self._expected
                )
        return False


def _denied(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape that answers UNAUTHENTICATED."""

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHORIZED)

    options = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, **options)
    return grpc.unary_unary_rpc_method_handler(deny, **options)
