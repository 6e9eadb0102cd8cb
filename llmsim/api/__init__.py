"""The HTTP layer: vLLM's OpenAI-compatible API on aiohttp, its handlers, errors and SSE writers.

Beside ``console`` (neither imports the other); may import ``proxy``, ``answers``,
``runtime``, ``observability``, ``engine`` and ``settings``.
"""

from llmsim.api.http.app import create_app

__all__ = ["create_app"]
