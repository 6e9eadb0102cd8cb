"""What an answer source may look at in a request, free of any HTTP or schema type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Endpoint = Literal["chat", "completions"]
Api = Literal["chat", "completions", "responses", "messages"]
"""The API a client called: the Responses and Messages APIs run as chat underneath."""


@dataclass(frozen=True, slots=True)
class RequestView:
    """One inference request as the answer sources see it.

    ``text`` is the last user message (chat) or the first prompt (completions): what
    rules match and built-in tasks read. ``tools`` maps each offered function's name to
    its JSON schema (None when the request offers no tools).
    """

    endpoint: Endpoint
    model: str
    adapter: str | None
    text: str
    system: str = ""
    messages: tuple[tuple[str, str], ...] = ()
    tools: Mapping[str, Mapping[str, Any]] | None = None
    max_tokens: int | None = None
    seed: int | None = None
    sampling: Mapping[str, Any] = field(default_factory=dict)
    """Sampling-relevant fields (temperature, top_p, n, ...), for matching recordings."""
    api: Api | None = None
    """The API the client called, when not ``endpoint`` itself (rules' ``endpoint`` matcher)."""
