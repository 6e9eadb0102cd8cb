"""The work one structured-output request may cost: every limit in one place.

Schemas, regexes and client patterns come from clients, so each is compiled and generated
under these limits; a request over any of them is refused (400) naming the limit instead
of blocking the server. The defaults are far above what real schemas need (the openai
SDK's ``parse()`` models, agent tool schemas) and far below what blocks an event loop.
The list is documented in ``docs/api.md`` ("Limits").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Named limits on the work of generating (or checking) one constrained value."""

    max_depth: int = 40
    """Nesting depth of a generated JSON value; deeper recursion is refused."""
    optional_depth: int = 4
    """Depth from which optional parts (properties, items, nullable and recursive
    branches) are left out, so recursive schemas end as a grammar engine's would."""
    max_values: int = 20_000
    """JSON values (objects, arrays, scalars) in one generated instance."""
    max_items: int = 1_000
    """Largest ``minItems`` / ``minProperties`` honoured."""
    max_chars: int = 100_000
    """Characters of all strings in one generated instance, and of one regex match."""
    max_resolution_work: int = 100_000
    """Schema nodes merged while following ``$ref`` and folding ``allOf``: the size of
    the expanded schema."""
    max_ref_chain: int = 100
    """``$ref`` / ``allOf`` indirections followed to reach one schema."""
    max_repeat: int = 10_000
    """Largest minimum count of a regex repetition (``x{n}``, ``x{n,m}``)."""
    max_regex_steps: int = 50_000
    """Regex parse-tree nodes visited while generating the strings of one request."""
    max_pattern_program: int = 20_000
    """Instructions of a compiled pattern (counted repetitions expanded) for the
    linear-time matcher; a longer pattern is not checked."""
    max_match_steps: int = 1_000_000
    """Threads the linear-time matcher may step through in one search (about a second of
    CPU): text length times live pattern states. A search over it gives up
    (:class:`MatchBudgetError`) instead of running for minutes on a long text."""


LIMITS = Limits()
"""The limits every request gets."""


def over(limit: str, value: int) -> str:
    """How a refusal names the limit it hit: ``(limit max_chars=100000)``."""
    return f"(limit {limit}={value})"
