"""A small JSON Schema check for tool-call arguments, enough for function parameters.

Covers what tool schemas use in practice: ``type`` (one or a list), ``enum``, ``const``,
``properties``, ``required``, ``additionalProperties``, ``items``, ``minimum``/``maximum``,
``minLength``/``maxLength``, ``pattern`` and ``anyOf``/``oneOf``/``allOf``. Keywords it does
not know, or whose value is not of the kind JSON Schema defines (``"enum": 5``), are ignored
(never a false alarm), so a rule is only refused for a real mismatch.
Patterns come from clients, so they run on a linear-time matcher: a pattern it cannot
check (backreferences, lookarounds) is not checked rather than risk a backtracking blow-up.
One check shares one step budget (``max_match_steps``) over all its patterns, compiling each
only once; a pattern met after the budget is spent is not checked either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmsim.engine.structured.budget import LIMITS
from llmsim.engine.structured.linear import LinearPattern, MatchMeter
from llmsim.engine.structured.regex import UnsupportedRegexError

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


@dataclass(slots=True)
class _Patterns:
    """The patterns of one check: each compiled once (None: cannot be checked), one budget."""

    meter: MatchMeter = field(default_factory=MatchMeter)
    compiled: dict[str, LinearPattern | None] = field(default_factory=dict)

    def mismatch(self, pattern: str, value: str) -> bool:
        """Whether ``value`` surely does not match ``pattern`` (unknown counts as a match)."""
        if self.meter.left <= 0:
            return False
        if pattern in self.compiled:
            linear = self.compiled[pattern]
        else:
            linear = self.compiled[pattern] = _compiled(pattern)
            # Compiling is work too: at most max_pattern_program steps, its cost when it compiles.
            self.meter.left -= linear.cost if linear is not None else LIMITS.max_pattern_program
        if linear is None:
            return False
        try:
            return linear.search(value, self.meter) is None
        except UnsupportedRegexError:  # over the budget: unknown
            return False


def _compiled(pattern: str) -> LinearPattern | None:
    try:
        return LinearPattern(pattern)
    except UnsupportedRegexError:
        return None


def schema_problem(
    value: Any, schema: Any, path: str = "$", patterns: _Patterns | None = None
) -> str | None:
    """The first way ``value`` breaks ``schema``, as ``$.city: expected string``; else None."""
    if not isinstance(schema, Mapping):
        return None  # true, {} or something unreadable: anything goes
    if patterns is None:
        patterns = _Patterns()
    checks = (_type, _enum, _bounds, _string, _object, _array, _combinators)
    for check in checks:
        problem = check(value, schema, path, patterns)
        if problem is not None:
            return problem
    return None


def _number(schema: Mapping[str, Any], key: str) -> int | float | None:
    """The keyword's value when it is a number (a client's schema may say anything)."""
    found = schema.get(key)
    return found if isinstance(found, (int, float)) and not isinstance(found, bool) else None


def _list(schema: Mapping[str, Any], key: str) -> list[Any]:
    found = schema.get(key)
    return found if isinstance(found, list) else []


def _is_type(value: Any, name: str) -> bool:
    if name not in _TYPES:
        return True
    if isinstance(value, bool) and name in ("number", "integer"):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[name])


def _type(value: Any, schema: Mapping[str, Any], path: str, _: _Patterns) -> str | None:
    wanted = schema.get("type")
    names = [wanted] if isinstance(wanted, str) else _list(schema, "type")
    names = [name for name in names if isinstance(name, str)]
    if not names or any(_is_type(value, name) for name in names):
        return None
    return f"{path}: expected {' or '.join(names)}"


def _enum(value: Any, schema: Mapping[str, Any], path: str, _: _Patterns) -> str | None:
    if "const" in schema and value != schema["const"]:
        return f"{path}: expected {schema['const']!r}"
    if isinstance(schema.get("enum"), list) and value not in schema["enum"]:
        return f"{path}: expected one of {list(schema['enum'])!r}"
    return None


def _bounds(value: Any, schema: Mapping[str, Any], path: str, _: _Patterns) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    low, high = _number(schema, "minimum"), _number(schema, "maximum")
    if low is not None and value < low:
        return f"{path}: must be at least {low}"
    if high is not None and value > high:
        return f"{path}: must be at most {high}"
    return None


def _string(value: Any, schema: Mapping[str, Any], path: str, patterns: _Patterns) -> str | None:
    if not isinstance(value, str):
        return None
    shortest, longest = _number(schema, "minLength"), _number(schema, "maxLength")
    if shortest is not None and len(value) < shortest:
        return f"{path}: shorter than {shortest} characters"
    if longest is not None and len(value) > longest:
        return f"{path}: longer than {longest} characters"
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and patterns.mismatch(pattern, value):
        return f"{path}: does not match {pattern!r}"
    return None


def _object(value: Any, schema: Mapping[str, Any], path: str, patterns: _Patterns) -> str | None:
    if not isinstance(value, dict):
        return None
    for name in _list(schema, "required"):
        if isinstance(name, str) and name not in value:
            return f"{path}: missing required property {name!r}"
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        properties = {}
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            problem = schema_problem(item, properties[name], f"{path}.{name}", patterns)
        elif extra is False:
            problem = f"{path}: unexpected property {name!r}"
        else:
            problem = schema_problem(item, extra, f"{path}.{name}", patterns)
        if problem is not None:
            return problem
    return None


def _array(value: Any, schema: Mapping[str, Any], path: str, patterns: _Patterns) -> str | None:
    if not isinstance(value, list) or "items" not in schema:
        return None
    for index, item in enumerate(value):
        problem = schema_problem(item, schema["items"], f"{path}[{index}]", patterns)
        if problem is not None:
            return problem
    return None


def _combinators(
    value: Any, schema: Mapping[str, Any], path: str, patterns: _Patterns
) -> str | None:
    for sub in _list(schema, "allOf"):
        problem = schema_problem(value, sub, path, patterns)
        if problem is not None:
            return problem
    for key in ("anyOf", "oneOf"):
        options = _list(schema, key)
        if options and all(
            schema_problem(value, sub, path, patterns) is not None for sub in options
        ):
            return f"{path}: matches none of the {key} schemas"
    return None
