"""Bearer-token authentication for ``/v1/*`` (as vLLM's ``--api-key`` does it) and ``/admin/*``."""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Middleware

from llmsim.api.errors import APIError, Handler

PROTECTED_PREFIXES = ("/v1/", "/admin/")


def auth_middleware(api_key: str) -> Middleware:
    """Reject ``/v1/*`` and ``/admin/*`` requests without ``Authorization: Bearer <api_key>``.

    The comparison runs in constant time; the key never appears in responses or logs.
    """
    expected = api_key.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(PROTECTED_PREFIXES) and not _authorized(request, expected):
            raise APIError(
                401,
                "Unauthorized: a valid 'Authorization: Bearer <key>' header is required.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await handler(request)

    return middleware


def _authorized(request: web.Request, expected: bytes) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), expected)
