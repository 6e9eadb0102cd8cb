"""The front doors: vLLM's HTTP API on aiohttp and its gRPC service, grouped by what they speak.

``http/`` holds the plumbing every HTTP door shares (the app factory, errors, the guard,
bodies, SSE); ``openai/`` vLLM's OpenAI-compatible routes; ``responses/`` and ``anthropic/``
the Responses and Messages APIs served over chat; ``admin/`` health, metrics, load and the
admin routes; ``grpc/`` vLLM's ``VllmEngine`` service. What a door shares with the others
and is not about its protocol lives in :mod:`llmsim.service`.

Beside ``console`` (neither imports the other); may import ``proxy``, ``answers``,
``runtime``, ``observability``, ``engine`` and ``settings``.
"""

from llmsim.api.http.app import create_app

__all__ = ["create_app"]
