"""A small JSON Schema check for tool-call arguments, enough for function parameters.

Covers what tool schemas use in practice: ``type`` (one or a list), ``enum``, ``const``,
``properties``, ``required``, ``additionalProperties``, ``items``, ``minimum``/``maximum``,
``minLength``/``maxLength``, ``pattern`` and ``anyOf``/``oneOf``/``allOf``. Keywords it does
not know are ignored (never a false alarm), so a rule is only refused for a real mismatch.
Patterns come from clients, so they run on a linear-time matcher: a pattern it cannot
check (backreferences, lookarounds) is not checked rather than risk a backtracking blow-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmsim.engine.structured.linear import LinearPattern
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


def schema_problem(value: Any, schema: Any, path: str = "$") -> str | None:
    """The first way ``value`` breaks ``schema``, as ``$.city: expected string``; else None."""
    if not isinstance(schema, Mapping):
        return None  # true, {} or something unreadable: anything goes
    checks = (_type, _enum, _bounds, _string, _object, _array, _combinators)
    for check in checks:
        problem = check(value, schema, path)
        if problem is not None:
            return problem
    return None


def _is_type(value: Any, name: str) -> bool:
    if name not in _TYPES:
        return True
    if isinstance(value, bool) and name in ("number", "integer"):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[name])


def _type(value: Any, schema: Mapping[str, Any], path: str) -> str | None:
    wanted = schema.get("type")
    if wanted is None:
        return None
    names = [wanted] if isinstance(wanted, str) else list(wanted)
    if any(_is_type(value, name) for name in names):
        return None
    return f"{path}: expected {' or '.join(names)}"


def _enum(value: Any, schema: Mapping[str, Any], path: str) -> str | None:
    if "const" in schema and value != schema["const"]:
        return f"{path}: expected {schema['const']!r}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{path}: expected one of {list(schema['enum'])!r}"
    return None


def _bounds(value: Any, schema: Mapping[str, Any], path: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if "minimum" in schema and value < schema["minimum"]:
        return f"{path}: must be at least {schema['minimum']}"
    if "maximum" in schema and value > schema["maximum"]:
        return f"{path}: must be at most {schema['maximum']}"
    return None


def _string(value: Any, schema: Mapping[str, Any], path: str) -> str | None:
    if not isinstance(value, str):
        return None
    if "minLength" in schema and len(value) < schema["minLength"]:
        return f"{path}: shorter than {schema['minLength']} characters"
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        return f"{path}: longer than {schema['maxLength']} characters"
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            if LinearPattern(pattern).search(value) is None:
                return f"{path}: does not match {pattern!r}"
        except UnsupportedRegexError:
            return None
    return None


def _object(value: Any, schema: Mapping[str, Any], path: str) -> str | None:
    if not isinstance(value, dict):
        return None
    for name in schema.get("required", ()):
        if name not in value:
            return f"{path}: missing required property {name!r}"
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            problem = schema_problem(item, properties[name], f"{path}.{name}")
        elif extra is False:
            problem = f"{path}: unexpected property {name!r}"
        else:
            problem = schema_problem(item, extra, f"{path}.{name}")
        if problem is not None:
            return problem
    return None


def _array(value: Any, schema: Mapping[str, Any], path: str) -> str | None:
    if not isinstance(value, list) or "items" not in schema:
        return None
    for index, item in enumerate(value):
        problem = schema_problem(item, schema["items"], f"{path}[{index}]")
        if problem is not None:
            return problem
    return None


def _combinators(value: Any, schema: Mapping[str, Any], path: str) -> str | None:
    for sub in schema.get("allOf", ()):
        problem = schema_problem(value, sub, path)
        if problem is not None:
            return problem
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if options and all(schema_problem(value, sub, path) is not None for sub in options):
            return f"{path}: matches none of the {key} schemas"
    return None
