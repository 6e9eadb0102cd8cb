"""JSON values that validate against a JSON Schema: what a structured-output model emits.

The generator walks the schema once per value, choosing among what the schema allows
with the request's random generator, so a seeded request gets the same value each time.
Keywords that constrain values in ways a one-pass generator cannot guarantee (``not``,
``if``/``then``/``else``, ``patternProperties``...) are refused up front by
:func:`check_schema`, naming the keyword, instead of producing output that fails
validation. Unknown keywords and annotations are ignored, as validators do.

Schemas come from clients, so every instance is generated under
:class:`~llmsim.engine.structured.budget.Limits` (values, characters, depth, resolution
work): a schema over one is refused naming the limit, and recursion always ends.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from llmsim.engine.structured.budget import LIMITS, Limits, over
from llmsim.engine.structured.errors import UnsupportedSchemaError
from llmsim.engine.structured.formats import FORMATS, word
from llmsim.engine.structured.numbers import number_instance
from llmsim.engine.structured.regex import RegexGenerator, UnsupportedRegexError
from llmsim.engine.structured.resolve import Resolver

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
_MALFORMED = (
    TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError, OverflowError,
)  # fmt: skip


def check_schema(schema: Any, limits: Limits = LIMITS) -> None:
    """Raise :class:`UnsupportedSchemaError` for a keyword the generator cannot honour,
    a ``$ref``/``allOf`` cycle with no value in between, or an expansion over ``limits``."""
    resolver = Resolver(schema, limits)
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
            shown = ref[:80] if isinstance(ref, str) else ref
            raise UnsupportedSchemaError("$ref", f"only local $ref are supported, not {shown!r}")
        if ref is not None or "allOf" in node:
            _resolvable(resolver, node)
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


def _resolvable(resolver: Resolver, node: dict[str, Any]) -> None:
    try:
        resolver.resolve(node)
    except UnsupportedSchemaError:
        raise
    except _MALFORMED as exc:
        detail = f"the JSON schema is malformed: {str(exc)[:200] or type(exc).__name__}"
        raise UnsupportedSchemaError("schema", detail) from None


def schema_instance(schema: Any, rng: random.Random, limits: Limits = LIMITS) -> Any:
    """A value that validates against ``schema`` (checked with :func:`check_schema` first).

    Generation stays within ``limits``: a schema that needs more work is refused.
    """
    check_schema(schema)
    try:
        return _Generator(schema, rng, limits).value(schema, 0)
    except UnsupportedSchemaError:
        raise
    except _MALFORMED as exc:
        # A malformed schema (``"minItems": "3"``, ``"enum": {}``) is the client's error.
        detail = f"the JSON schema is malformed: {str(exc)[:200] or type(exc).__name__}"
        raise UnsupportedSchemaError("schema", detail) from None


def json_text(value: Any) -> str:
    """The value as a model would write it: JSON with a space after separators, never NaN."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise UnsupportedSchemaError("const", "NaN and Infinity are not JSON values") from None


def any_json_object(rng: random.Random) -> dict[str, Any]:
    """A small free-form object, for ``response_format: json_object``."""
    fields: dict[str, Any] = {}
    for _ in range(rng.randint(2, 4)):
        fields[word(rng)] = rng.choice((word(rng), rng.randint(0, 100), rng.random() < 0.5))
    return fields


class _Generator:
    """One instance of one schema: the budgets left, the resolver and regex caches."""

    def __init__(self, root: Any, rng: random.Random, limits: Limits) -> None:
        self.rng = rng
        self.limits = limits
        self.refs = Resolver(root, limits)
        self.patterns = RegexGenerator(rng, limits)
        self.values_left = limits.max_values
        self.chars_left = limits.max_chars
        self.enums: dict[int, list[Any]] = {}

    # -- dispatch -----------------------------------------------------------------
    def value(self, schema: Any, depth: int) -> Any:
        self._count_value(depth)
        if schema is True or schema == {}:
            return self._text(word(self.rng))
        if schema is False:
            raise UnsupportedSchemaError("false", "a schema of false admits no value")
        schema = self.refs.resolve(schema)
        if "const" in schema:
            return _json_value(schema["const"], "const")
        if "enum" in schema:
            return self.rng.choice(self._enum(schema["enum"]))
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.value(self._branch(schema, key, depth), depth + 1)
        if schema.get("nullable") is True and depth >= self.limits.optional_depth:
            return None
        return self._typed(schema, self._type(schema, depth), depth)

    def _enum(self, values: Any) -> list[Any]:
        """The values of an ``enum``, each checked once to have a JSON form."""
        if not isinstance(values, list) or not values:
            raise UnsupportedSchemaError("enum", "'enum' must be a non-empty list")
        if id(values) not in self.enums:
            _json_value(values, "enum")
            self.enums[id(values)] = values  # keeps ``values`` alive: its id stays unique
        return values

    def _typed(self, schema: dict[str, Any], kind: str, depth: int) -> Any:
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "string":
            return self._string(schema)
        if kind in ("integer", "number"):
            return number_instance(schema, kind == "integer", self.rng)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        raise UnsupportedSchemaError("type", f"unknown JSON schema type {str(kind)[:40]!r}")

    def _count_value(self, depth: int) -> None:
        if depth > self.limits.max_depth:
            limit = over("max_depth", self.limits.max_depth)
            raise UnsupportedSchemaError(
                "$ref", f"the schema nests values too deep or recurses without an end {limit}"
            )
        self.values_left -= 1
        if self.values_left < 0:
            limit = over("max_values", self.limits.max_values)
            raise UnsupportedSchemaError("schema", f"the schema asks for too many values {limit}")

    def _text(self, text: str) -> str:
        """Charge generated characters against the instance's budget."""
        self.chars_left -= len(text)
        if self.chars_left < 0:
            limit = over("max_chars", self.limits.max_chars)
            raise UnsupportedSchemaError("minLength", f"the schema asks for too much text {limit}")
        return text

    def _branch(self, schema: dict[str, Any], key: str, depth: int) -> Any:
        branches = schema[key]
        if not isinstance(branches, list) or not branches:
            raise UnsupportedSchemaError(key, f"'{key}' must be a non-empty list of schemas")
        if depth >= self.limits.optional_depth:
            plain = [b for b in branches if self.refs.terminal(b)]
            branches = plain or branches
        chosen = self.rng.choice(branches)
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
        if not rest:
            return chosen
        if not isinstance(chosen, dict):
            return rest if chosen is True else chosen
        return self.refs.merge(rest, self.refs.resolve(chosen))

    def _type(self, schema: dict[str, Any], depth: int) -> str:
        kind = schema.get("type")
        if isinstance(kind, list):
            real = [k for k in kind if k != "null"]
            if not real or (depth >= self.limits.optional_depth and "null" in kind):
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
        shallow = depth < self.limits.optional_depth
        low = self._size(schema, "minProperties")
        high = int(schema.get("maxProperties", max(low, len(properties) + len(required) + 2)))
        _ordered(low, high, "minProperties")
        chosen = list(dict.fromkeys(required))
        optional = [name for name in properties if name not in chosen]
        for name in optional:
            if len(chosen) >= high:
                break
            if len(chosen) < low or (shallow and self.rng.random() < 0.7):
                chosen.append(name)
        result: dict[str, Any] = {}
        for name in chosen:
            result[name] = self.value(properties.get(name, _extra_schema(extra)), depth + 1)
        wanted = max(low, 1 if not properties and extra is not False and shallow else 0)
        wanted = min(wanted, high)
        while len(result) < wanted and extra is not False:
            key = self._text(f"{word(self.rng)}_{len(result)}")
            result[key] = self.value(_extra_schema(extra), depth + 1)
        return result

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        items = schema.get("items", True)
        prefix = schema.get("prefixItems")
        if isinstance(items, list):  # draft 4 tuple form
            prefix, items = items, schema.get("additionalItems", True)
        prefix = prefix or []
        low = self._size(schema, "minItems")
        high = int(schema.get("maxItems", max(low, len(prefix)) + 3))
        _ordered(low, high, "minItems")
        if items is False:
            high = min(high, len(prefix))
        deep = depth >= self.limits.optional_depth
        top = low if deep else min(high, max(low, len(prefix)) + 2)
        first = low if deep else max(low, min(len(prefix), high))  # deep: only what is required
        count = self.rng.randint(first, max(first, top))
        unique = bool(schema.get("uniqueItems"))
        result: list[Any] = []
        seen: set[str] = set()
        attempts = 0
        while len(result) < count and attempts < count * 10 + 10:
            attempts += 1
            position = len(result)
            part = prefix[position] if position < len(prefix) else items
            value = self.value(part, depth + 1)
            if unique:
                key = json.dumps(value, sort_keys=True)
                if key in seen:
                    continue
                seen.add(key)
            result.append(value)
        if len(result) < low:  # the items admit fewer distinct values than minItems asks
            raise UnsupportedSchemaError("uniqueItems", f"no {low} distinct items were found")
        return result

    def _size(self, schema: dict[str, Any], keyword: str) -> int:
        size = int(schema.get(keyword, 0))
        if size > self.limits.max_items:
            limit = over("max_items", self.limits.max_items)
            raise UnsupportedSchemaError(keyword, f"'{keyword}' is too large {limit}")
        return size

    # -- scalars ------------------------------------------------------------------
    def _string(self, schema: dict[str, Any]) -> str:
        low = int(schema.get("minLength", 0))
        if low > self.chars_left:
            limit = over("max_chars", self.limits.max_chars)
            raise UnsupportedSchemaError("minLength", f"the schema asks for too much text {limit}")
        high = schema.get("maxLength")
        if high is not None:
            _ordered(low, high, "minLength")
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in FORMATS and "pattern" not in schema:
            text = FORMATS[fmt](self.rng)
            if len(text) >= low and (high is None or len(text) <= high):
                return self._text(text)
        if isinstance(schema.get("pattern"), str):
            return self._text(self._pattern(schema["pattern"], low, high))
        return self._text(_words(self.rng, low, high))

    def _pattern(self, pattern: str, low: int, high: int | None) -> str:
        # ``pattern`` is a search, not a full match; generating a full match is stricter.
        try:
            text = ""
            for _ in range(20):
                text = self.patterns.instance(pattern)
                if len(text) >= low and (high is None or len(text) <= high):
                    return text
            return text
        except UnsupportedRegexError as exc:
            raise UnsupportedSchemaError("pattern", str(exc)) from None


def _ordered(low: int, high: int, keyword: str) -> None:
    if low > high:
        raise UnsupportedSchemaError(keyword, f"'{keyword}' above its maximum admits no value")


def _words(rng: random.Random, low: int, high: int | None) -> str:
    words = [word(rng) for _ in range(rng.randint(1, 3))]
    length = sum(map(len, words)) + len(words) - 1
    while length < low:
        words.append(word(rng))
        length += len(words[-1]) + 1
    text = " ".join(words)
    if high is not None and len(text) > high:
        text = text[:high].rstrip() if high > 0 else ""
        text = text.ljust(min(max(low, len(text)), high), "x")
    return text


def _json_value(value: Any, keyword: str) -> Any:
    """A ``const`` / ``enum`` value as given, unless it has no JSON form (NaN, Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UnsupportedSchemaError(keyword, f"'{keyword}' holds NaN or Infinity: not JSON")
    if isinstance(value, (dict, list)):
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise UnsupportedSchemaError(keyword, f"'{keyword}' holds NaN or Infinity") from None
    return value


def _extra_schema(extra: Any) -> Any:
    return extra if isinstance(extra, dict) else {"type": "string"}
