"""The HTTP layer: vLLM's OpenAI-compatible API on aiohttp."""

from llmsim.api.app import create_app

__all__ = ["create_app"]
