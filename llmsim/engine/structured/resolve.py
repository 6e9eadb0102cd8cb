"""Following ``$ref`` and folding ``allOf``, with every schema node resolved once.

A client's schema can point at itself (``{"$ref": "#"}``), at a cycle of definitions, or
double at each of thirty definitions (2³⁰ nodes once expanded). Resolution is memoised per
node, a ``$ref``/``allOf`` cycle with no schema in between is refused, and the merge work
(the size of the expanded schema) is metered against :class:`Limits`.
"""

from __future__ import annotations

import json
from typing import Any

from llmsim.engine.structured.budget import Limits, over
from llmsim.engine.structured.errors import UnsupportedSchemaError


class Resolver:
    """Resolves the nodes of one schema (``root``) for one generated instance."""

    def __init__(self, root: Any, limits: Limits) -> None:
        self.root = root
        self.limits = limits
        self.work_left = limits.max_resolution_work
        self._resolved: dict[int, tuple[Any, dict[str, Any]]] = {}
        self._terminal: dict[int, tuple[Any, bool]] = {}
        self._in_progress: set[int] = set()

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        """``schema`` with its ``$ref`` followed and ``allOf`` folded in (siblings win)."""
        if "$ref" not in schema and "allOf" not in schema:
            return schema
        key = id(schema)
        known = self._resolved.get(key)
        if known is not None:
            return known[1]
        if key in self._in_progress:
            raise UnsupportedSchemaError(
                "$ref", "the schema refers to itself through $ref/allOf with no value in between"
            )
        if len(self._in_progress) >= self.limits.max_ref_chain:
            raise UnsupportedSchemaError(
                "$ref",
                f"the $ref/allOf chain is too long {over('max_ref_chain', self.limits.max_ref_chain)}",
            )
        self._in_progress.add(key)
        try:
            result = self._fold(schema)
        finally:
            self._in_progress.discard(key)
        self._resolved[key] = (schema, result)  # keeps ``schema`` alive: its id stays unique
        return result

    def merge(self, base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        """Combine two schemas that must both hold, charging the size of the result."""
        merged = {**base, **extra}
        if isinstance(base.get("properties"), dict) and isinstance(extra.get("properties"), dict):
            merged["properties"] = {**base["properties"], **extra["properties"]}
        if isinstance(base.get("required"), list) and isinstance(extra.get("required"), list):
            merged["required"] = list(dict.fromkeys([*base["required"], *extra["required"]]))
        self._charge(len(merged) + len(merged.get("properties") or ()))
        return merged

    def terminal(self, schema: Any) -> bool:
        """Whether ``schema`` (one ``$ref`` followed) names no other schema: recursion ends there."""
        if not isinstance(schema, dict):
            return True
        known = self._terminal.get(id(schema))
        if known is None:
            target = schema
            ref = schema.get("$ref")
            if isinstance(ref, str):
                target = {**schema, "_": self.lookup(ref)}
                del target["$ref"]
            text = json.dumps(target)
            self._charge(1 + len(text) // 16)
            known = (schema, "$ref" not in text)
            self._terminal[id(schema)] = known
        return known[1]

    def lookup(self, ref: str) -> Any:
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
                raise UnsupportedSchemaError("$ref", f"$ref {ref[:80]!r} does not resolve")
        return node

    def _fold(self, schema: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str):
                raise UnsupportedSchemaError("$ref", "'$ref' must be a string")
            target = self.lookup(ref)
            if target is False:
                raise UnsupportedSchemaError("false", "a schema of false admits no value")
            base = self.resolve(target) if isinstance(target, dict) else {}
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = self.merge(base, siblings) if siblings else base
        if "allOf" in schema:
            parts = schema["allOf"]
            if not isinstance(parts, list):
                raise UnsupportedSchemaError("allOf", "'allOf' must be a list of schemas")
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in parts:
                if part is False:
                    raise UnsupportedSchemaError("false", "a schema of false admits no value")
                if isinstance(part, dict):
                    merged = self.merge(merged, self.resolve(part))
            schema = merged
        return schema

    def _charge(self, work: int) -> None:
        self.work_left -= work
        if self.work_left < 0:
            limit = self.limits.max_resolution_work
            raise UnsupportedSchemaError(
                "$ref", f"the expanded schema is too large {over('max_resolution_work', limit)}"
            )
