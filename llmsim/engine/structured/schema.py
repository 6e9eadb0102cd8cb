"""JSON values that validate against a JSON Schema: what a structured-output model emits.

The generator walks the schema once per value, choosing among what the schema allows
with the request's random generator, so a seeded request gets the same value each time.
Keywords that constrain values in ways a one-pass generator cannot guarantee (``not``,
``if``/``then``/``else``, ``patternProperties``...) are refused up front by
:func:`check_schema`, naming the keyword, instead of producing output that fails
validation. Unknown keywords and annotations are ignored, as validators do.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from llmsim.engine.structured.formats import FORMATS, word
from llmsim.engine.structured.regex import UnsupportedRegexError, regex_instance

UNSUPPORTED_KEYWORDS = (
    "not", "if", "then", "else", "patternProperties", "dependentRequired",
    "dependentSchemas", "dependencies", "contains", "minContains", "maxContains",
    "propertyNames", "unevaluatedItems", "unevaluatedProperties", "$dynamicRef",
    "$recursiveRef",
)  # fmt: skip
SUPPORTED_KEYWORDS = (
    "type", "properties", "required", "additionalProperties", "minProperties",
    "maxProperties", "items", "prefixItems", "minItems", "maxItems", "uniqueItems", "enum",
    "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "format", "minimum",
    "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength",
    "maxLength", "pattern", "nullable",
)  # fmt: skip
"""Honoured keywords (annotations such as ``title`` or ``description`` are ignored)."""

_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
DEEP = 4
MAX_SIZE = 1000
"""Largest ``minItems``, ``minProperties`` (and a thousand times that ``minLength``) honoured."""
MAX_VALUES = 20_000
"""Values one instance may hold: a schema asking for more is refused, not generated."""
"""Nesting depth from which optional parts are left out, so recursive schemas end."""
MAX_DEPTH = 40


class UnsupportedSchemaError(ValueError):
    """A schema llmsim cannot honour; ``keyword`` names the reason."""

    def __init__(self, keyword: str, detail: str = "") -> None:
        super().__init__(detail or f"JSON schema keyword '{keyword}' is not supported by llmsim")
        self.keyword = keyword


def check_schema(schema: Any) -> None:
    """Raise :class:`UnsupportedSchemaError` for a keyword the generator cannot honour."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, bool):
            continue
        if not isinstance(node, dict):
            raise UnsupportedSchemaError("schema", "a JSON schema must be an object or a boolean")
        for keyword in UNSUPPORTED_KEYWORDS:
            if keyword in node:
                raise UnsupportedSchemaError(keyword)
        ref = node.get("$ref")
        if ref is not None and (not isinstance(ref, str) or not ref.startswith("#")):
            raise UnsupportedSchemaError("$ref", f"only local $ref are supported, not {ref!r}")
        for key in _SCHEMA_MAPS:
            if isinstance(node.get(key), dict):
                stack.extend(node[key].values())
        for key in _SCHEMA_LISTS:
            if isinstance(node.get(key), list):
                stack.extend(node[key])
        for key in ("items", "additionalProperties"):
            value = node.get(key)
            if isinstance(value, list):
                stack.extend(value)
            elif isinstance(value, dict):
                stack.append(value)


def schema_instance(schema: Any, rng: random.Random) -> Any:
    """A value that validates against ``schema`` (checked with :func:`check_schema` first)."""
    check_schema(schema)
    try:
        return _Generator(schema, rng).value(schema, 0)
    except UnsupportedSchemaError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError) as exc:
        # A malformed schema (``"minItems": "3"``, ``"enum": {}``) is the client's error.
        raise UnsupportedSchemaError("schema", f"the JSON schema is malformed: {exc!r}") from None


def json_text(value: Any) -> str:
    """The value as a model would write it: compact JSON with a space after separators."""
    return json.dumps(value, ensure_ascii=False)


def any_json_object(rng: random.Random) -> dict[str, Any]:
    """A small free-form object, for ``response_format: json_object``."""
    fields: dict[str, Any] = {}
    for _ in range(rng.randint(2, 4)):
        fields[word(rng)] = rng.choice((word(rng), rng.randint(0, 100), rng.random() < 0.5))
    return fields


class _Generator:
    def __init__(self, root: Any, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.left = MAX_VALUES

    # -- dispatch -----------------------------------------------------------------
    def value(self, schema: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise UnsupportedSchemaError("$ref", "the schema recurses without an end")
        self.left -= 1
        if self.left < 0:
            raise UnsupportedSchemaError("minItems", "the schema asks for too large a value")
        if schema is True or schema == {}:
            return word(self.rng)
        if schema is False:
            raise UnsupportedSchemaError("false", "a schema of false admits no value")
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            if not schema["enum"]:
                raise UnsupportedSchemaError("enum", "an empty enum admits no value")
            return self.rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.value(self._branch(schema, key, depth), depth + 1)
        kind = self._type(schema, depth)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "string":
            return self._string(schema)
        if kind in ("integer", "number"):
            return self._number(schema, kind == "integer")
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        raise UnsupportedSchemaError("type", f"unknown JSON schema type {kind!r}")

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Follow ``$ref`` and fold ``allOf`` into one schema (siblings win over targets)."""
        while "$ref" in schema:
            target = self._lookup(schema["$ref"])
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = _merge(target if isinstance(target, dict) else {}, siblings)
        if "allOf" in schema:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                if isinstance(part, dict):
                    merged = _merge(merged, self._resolve(part))
            schema = merged
        return schema

    def _lookup(self, ref: str) -> Any:
        node = self.root
        for part in ref.lstrip("#").split("/"):
            if not part:
                continue
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise UnsupportedSchemaError("$ref", f"$ref {ref!r} does not resolve")
        return node

    def _branch(self, schema: dict[str, Any], key: str, depth: int) -> Any:
        branches = schema[key]
        if not isinstance(branches, list) or not branches:
            raise UnsupportedSchemaError(key, f"'{key}' must be a non-empty list of schemas")
        if depth >= DEEP:
            plain = [b for b in branches if not _recursive(b)]
            branches = plain or branches
        chosen = self.rng.choice(branches)
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
        if not rest:
            return chosen
        if not isinstance(chosen, dict):
            return rest if chosen is True else chosen
        return _merge(rest, self._resolve(chosen))

    def _type(self, schema: dict[str, Any], depth: int) -> str:
        kind = schema.get("type")
        if isinstance(kind, list):
            real = [k for k in kind if k != "null"]
            if not real or (depth >= DEEP and "null" in kind):
                return "null"
            return str(self.rng.choice(real))
        if isinstance(kind, str):
            return kind
        if "properties" in schema or "required" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema or "minItems" in schema:
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "multipleOf")):
            return "number"
        return "string"

    # -- containers ---------------------------------------------------------------
    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties") or {}
        required = [name for name in schema.get("required") or [] if isinstance(name, str)]
        extra = schema.get("additionalProperties", True)
        low = _size(schema, "minProperties", MAX_SIZE)
        high = int(schema.get("maxProperties", len(properties) + len(required) + 2))
        chosen = list(dict.fromkeys(required))
        optional = [name for name in properties if name not in chosen]
        for name in optional:
            if len(chosen) >= high:
                break
            if len(chosen) < low or (depth < DEEP and self.rng.random() < 0.7):
                chosen.append(name)
        result: dict[str, Any] = {}
        for name in chosen:
            result[name] = self.value(properties.get(name, _extra_schema(extra)), depth + 1)
        wanted = max(low, 1 if not properties and extra is not False and depth < DEEP else 0)
        wanted = min(wanted, high)
        while len(result) < wanted and extra is not False:
            key = f"{word(self.rng)}_{len(result)}"
            result[key] = self.value(_extra_schema(extra), depth + 1)
        return result

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        items = schema.get("items", True)
        prefix = schema.get("prefixItems")
        if isinstance(items, list):  # draft 4 tuple form
            prefix, items = items, schema.get("additionalItems", True)
        prefix = prefix or []
        low = _size(schema, "minItems", MAX_SIZE)
        high = int(schema.get("maxItems", max(low, len(prefix)) + 3))
        if items is False:
            high = min(high, len(prefix))
        top = low if depth >= DEEP else min(high, max(low, len(prefix)) + 2)
        count = self.rng.randint(max(low, min(len(prefix), high)), max(low, top))
        unique = bool(schema.get("uniqueItems"))
        result: list[Any] = []
        seen: set[str] = set()
        attempts = 0
        while len(result) < count and attempts < count * 10 + 10:
            attempts += 1
            position = len(result)
            part = prefix[position] if position < len(prefix) else items
            value = self.value(part, depth + 1)
            key = json.dumps(value, sort_keys=True)
            if unique and key in seen:
                continue
            seen.add(key)
            result.append(value)
        return result

    # -- scalars ------------------------------------------------------------------
    def _string(self, schema: dict[str, Any]) -> str:
        low = _size(schema, "minLength", MAX_SIZE * 1000)
        high = schema.get("maxLength")
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in FORMATS and "pattern" not in schema:
            text = FORMATS[fmt](self.rng)
            if len(text) >= low and (high is None or len(text) <= high):
                return text
        if isinstance(schema.get("pattern"), str):
            return self._pattern(schema["pattern"], low, high)
        return self._words(low, high)

    def _pattern(self, pattern: str, low: int, high: int | None) -> str:
        # ``pattern`` is a search, not a full match; generating a full match is stricter.
        try:
            text = ""
            for _ in range(20):
                text = regex_instance(pattern, self.rng)
                if len(text) >= low and (high is None or len(text) <= high):
                    return text
            return text
        except UnsupportedRegexError as exc:
            raise UnsupportedSchemaError("pattern", str(exc)) from None

    def _words(self, low: int, high: int | None) -> str:
        count = self.rng.randint(1, 3)
        text = " ".join(word(self.rng) for _ in range(count))
        while len(text) < low:
            text += " " + word(self.rng)
        if high is not None and len(text) > high:
            text = text[:high].rstrip() if high > 0 else ""
            text = text.ljust(min(max(low, len(text)), high), "x")
        return text

    def _number(self, schema: dict[str, Any], integer: bool) -> int | float:
        low, high = _bounds(schema, integer)
        step = schema.get("multipleOf")
        if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0:
            return _multiple(low, high, step, integer, self.rng)
        if integer:
            return self.rng.randint(math.ceil(low), math.floor(high))
        value = round(self.rng.uniform(low, high), 2)
        return value if low <= value <= high else (low + high) / 2


def _size(schema: dict[str, Any], keyword: str, limit: int) -> int:
    size = int(schema.get(keyword, 0))
    if size > limit:
        raise UnsupportedSchemaError(keyword, f"'{keyword}' above {limit} is not supported")
    return size


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Combine two schemas that must both hold (``allOf``, ``$ref`` siblings, a branch)."""
    merged = {**base, **extra}
    if "properties" in base and "properties" in extra:
        merged["properties"] = {**base["properties"], **extra["properties"]}
    if "required" in base and "required" in extra:
        merged["required"] = list(dict.fromkeys([*base["required"], *extra["required"]]))
    return merged


def _extra_schema(extra: Any) -> Any:
    return extra if isinstance(extra, dict) else {"type": "string"}


def _recursive(schema: Any) -> bool:
    return "$ref" in json.dumps(schema) if isinstance(schema, dict) else False


def _bounds(schema: dict[str, Any], integer: bool) -> tuple[float, float]:
    """Inclusive bounds; exclusive ones (draft 4 booleans too) are pulled inwards."""
    low, low_open = _bound(schema, "minimum", "exclusiveMinimum", max)
    high, high_open = _bound(schema, "maximum", "exclusiveMaximum", min)
    if low is None and high is None:
        low, high = 0, 100
    elif low is None:
        assert high is not None
        low = 0 if high >= 0 else high - 100
    elif high is None:
        high = max(low, 0) + 100
    nudge = 1.0 if integer else min(0.01, (high - low) / 4 or 0.01)
    if low_open:
        low = math.floor(low) + 1 if integer else low + nudge
    if high_open:
        high = math.ceil(high) - 1 if integer else high - nudge
    if (integer and math.ceil(low) > math.floor(high)) or low > high:
        raise UnsupportedSchemaError("minimum", "the bounds minimum..maximum admit no value")
    return low, high


def _bound(
    schema: dict[str, Any], inclusive: str, exclusive: str, tighter: Any
) -> tuple[float | None, bool]:
    """The bound and whether it is exclusive (draft 4 booleans and draft 6+ numbers)."""
    value = schema.get(inclusive)
    flag = schema.get(exclusive)
    if isinstance(flag, bool):
        return value, flag and value is not None
    if isinstance(flag, (int, float)) and (value is None or tighter(value, flag) == flag):
        return flag, True
    return value, False


def _multiple(
    low: float, high: float, step: float, integer: bool, rng: random.Random
) -> int | float:
    first, last = math.ceil(low / step), math.floor(high / step)
    candidates = [rng.randint(first, last) for _ in range(8)] if first <= last else []
    for k in candidates:
        value: int | float = k * step
        if isinstance(step, float):
            value = float(round(value, 12))
            if value.is_integer() and integer:
                value = int(value)
        if low <= value <= high and (value / step) == int(value / step):
            return value
    for whole in range(math.ceil(low), min(math.floor(high), math.ceil(low) + 1000) + 1):
        if whole / step == int(whole / step):
            return whole
    raise UnsupportedSchemaError("multipleOf", "no value within the bounds is a multiple")
