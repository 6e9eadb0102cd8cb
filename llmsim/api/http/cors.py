"""Cross-origin requests, answered as vLLM's CORS middleware (Starlette's) answers them.

Attached only when ``allowed_origins`` names at least one origin, so a server without CORS
pays nothing. A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``)
is answered here: 200 with the allowed methods and headers, or 400 naming what is not
allowed. Any other request from an allowed origin gets ``Access-Control-Allow-Origin`` (and
``-Credentials``) on its response, streamed ones included.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from llmsim.settings.model import Settings

ALL_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
SAFELISTED_HEADERS = ("Accept", "Accept-Language", "Content-Language", "Content-Type")
PREFLIGHT_MAX_AGE = "600"


@dataclass(frozen=True)
class CorsPolicy:
    origins: frozenset[str]
    methods: tuple[str, ...]
    headers: frozenset[str]
    credentials: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> CorsPolicy:
        methods = settings.allowed_methods
        return cls(
            origins=frozenset(settings.allowed_origins),
            methods=ALL_METHODS if "*" in methods else tuple(m.upper() for m in methods),
            headers=frozenset(h.lower() for h in settings.allowed_headers),
            credentials=settings.allow_credentials,
        )

    @property
    def any_origin(self) -> bool:
        return "*" in self.origins

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins

    def origin_headers(self, origin: str, explicit: bool) -> dict[str, str]:
        """``Access-Control-Allow-Origin`` (``*`` unless credentials or cookies need the
        origin itself) and ``-Credentials``."""
        headers = {"Access-Control-Allow-Origin": origin if explicit else "*"}
        if explicit:
            headers["Vary"] = "Origin"
        if self.credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        return headers

    def preflight(self, request: web.Request, origin: str) -> web.Response:
        problems = []
        if not self.allows(origin):
            problems.append("origin")
        method = request.headers["Access-Control-Request-Method"].upper()
        if method not in self.methods:
            problems.append("method")
        requested = request.headers.get("Access-Control-Request-Headers", "")
        names = [name.strip() for name in requested.split(",") if name.strip()]
        if "*" not in self.headers and any(
            name.lower() not in self.headers | {h.lower() for h in SAFELISTED_HEADERS}
            for name in names
        ):
            problems.append("headers")
        if problems:
            return web.Response(status=400, text="Disallowed CORS " + ", ".join(problems))
        headers = self.origin_headers(origin, explicit=not self.any_origin or self.credentials)
        headers["Access-Control-Allow-Methods"] = ", ".join(self.methods)
        headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        if "*" in self.headers:
            allowed = requested
        else:
            allowed = ", ".join(sorted({*SAFELISTED_HEADERS, *self.headers}))
        if allowed:
            headers["Access-Control-Allow-Headers"] = allowed
        return web.Response(status=200, text="OK", headers=headers)


def attach_cors(app: web.Application, settings: Settings) -> None:
    """Answer preflights and mark responses to allowed origins (no-op without origins)."""
    if not settings.allowed_origins:
        return
    policy = CorsPolicy.from_settings(settings)

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if (
            origin is not None
            and request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
        ):
            return policy.preflight(request, origin)
        return await handler(request)

    async def mark_response(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is None or not policy.allows(origin):
            return
        explicit = not policy.any_origin or "Cookie" in request.headers or policy.credentials
        response.headers.update(policy.origin_headers(origin, explicit))

    app.middlewares.append(preflight)
    app.on_response_prepare.append(mark_response)
