"""Checks that read several fields of a request body, run only for bodies that need them.

As pydantic model validators they would cost every request a Python call, although only
requests that send one of a few fields (``tool_choice``, ``guided_*``, ``stream_options``)
can fail them. :func:`llmsim.api.http.requests.validate_body` runs them when the raw body has
one of :attr:`CrossChecks.keys`: ``before`` on the raw body (it may rewrite it), ``after``
on the validated model, so field errors still come first where they did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _as_given(data: dict[str, Any]) -> dict[str, Any]:
    return data


def _nothing(body: Any) -> None:
    return None


@dataclass(frozen=True)
class CrossChecks:
    """A model's checks over several fields; each raises ``ValueError`` with vLLM's wording."""

    keys: frozenset[str]
    before: Callable[[dict[str, Any]], dict[str, Any]] = _as_given
    after: Callable[[Any], None] = _nothing
