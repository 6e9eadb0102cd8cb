"""LoRA adapters named on the command line: vLLM's ``--lora-modules`` forms and name lists.

``name=path``, a JSON object or a JSON list, alone or several in one string, and comma-separated
names (``--lora a,b``) all become the lists :class:`~llmsim.settings.model.Settings` holds.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class LoraModule(BaseModel):
    """A LoRA adapter the server knows at start-up (vLLM's ``--lora-modules`` entry)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    path: str = Field(min_length=1)
    base_model_name: str | None = None


def split_names(value: Any) -> Any:
    """Accept ``"a,b"``, ``["a", "b,c"]`` or nothing; flatten to a list of names."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        return value
    names: list[Any] = []
    for item in items:
        if isinstance(item, str):
            names.extend(part.strip() for part in item.split(",") if part.strip())
        else:
            names.append(item)
    return names


def unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _parse_lora_module(item: Any) -> Any:
    if not isinstance(item, str):
        return item
    text = item.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON adapter description {text!r}: {exc.msg}") from None
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise ValueError(f"invalid adapter {text!r}: expected name=path or a JSON object")
    return {"name": name.strip(), "path": path.strip()}


def split_lora_modules(value: Any) -> Any:
    """Accept vLLM's ``name=path`` and JSON forms, one string or a list of them."""
    if value is None:
        return []
    if isinstance(value, str):
        value = _scan_lora_modules(value)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return value
    return [_parse_lora_module(item) for item in value]


def _scan_lora_modules(text: str) -> list[Any]:
    """Split ``a=/p {"name": "b", "path": "/q"}`` (or a JSON list) into entries."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            return list(json.loads(stripped))
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON list of adapters: {exc.msg}") from None
    decoder = json.JSONDecoder()
    items: list[Any] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char.isspace() or char == ",":
            position += 1
        elif char == "{":
            try:
                item, position = decoder.raw_decode(text, position)
            except json.JSONDecodeError as exc:
                raise ValueError(f"invalid JSON adapter description: {exc.msg}") from None
            items.append(item)
        else:
            end = position
            while end < len(text) and not text[end].isspace() and text[end] != ",":
                end += 1
            items.append(text[position:end])
            position = end
    return items
