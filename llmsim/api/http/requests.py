"""Reading and validating request bodies into the pydantic models of :mod:`schemas`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from llmsim.api.http.bodies import read_body
from llmsim.api.http.errors import APIError
from llmsim.api.http.jsonio import JSONInputError, loads_bounded
from llmsim.api.http.keys import LARGE_BODY, SETTINGS
from llmsim.api.openai.cross_checks import CrossChecks

ModelT = TypeVar("ModelT", bound=BaseModel)

_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "function-after"})


OFF_LOOP_BYTES = 256 * 1024
"""Bodies larger than this are parsed and validated in a worker thread: a few megabytes of
prompts take a second or more of Python work, which would otherwise hold the event loop."""


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, or a 400 that says what is wrong with it."""
    body = await _read(request)
    if len(body) <= OFF_LOOP_BYTES:
        return json_object(body)
    return await asyncio.to_thread(json_object, body)


async def _read(request: web.Request) -> bytes:
    content_type = request.headers.get("Content-Type")
    if content_type is not None and not _is_json(request.content_type):
        raise APIError(400, f"Content-Type must be application/json, not {request.content_type!r}")
    body = await read_body(request, request.app[SETTINGS].max_request_body_size)
    if not body:
        raise APIError(400, "Request body is empty; expected a JSON object")
    if len(body) > OFF_LOOP_BYTES:
        request[LARGE_BODY] = True
    return body


def is_large(request: web.Request) -> bool:
    """Whether the body was large enough to be worked on off the event loop. A plain body
    that says its small length is settled from its headers: looking up a flag that is not
    set costs an exception inside aiohttp's mapping, on every request."""
    length = request.content_length
    if (
        length is not None
        and length <= OFF_LOOP_BYTES
        and "Content-Encoding" not in request.headers
    ):
        return False
    return bool(request.get(LARGE_BODY, False))


def json_object(body: bytes) -> dict[str, Any]:
    """``body`` parsed, or a 400 that says what is wrong with it."""
    try:
        data = loads_bounded(body)
    except JSONInputError as exc:
        raise APIError(400, f"Invalid JSON body: {exc}") from None
    if b"\\u" in body and _has_unpaired_surrogate(data):
        raise APIError(400, "Invalid JSON body: a string contains an unpaired UTF-16 surrogate")
    if not isinstance(data, dict):
        raise APIError(400, "Request body must be a JSON object")
    return data


def _has_unpaired_surrogate(data: Any) -> bool:
    """True if a string holds a lone surrogate, which JSON can escape (``"\\ud800"``).

    Such a string is not Unicode text and cannot be encoded into an answer. orjson
    refuses it while parsing; the standard library parser lets it through.
    """
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode()
                except UnicodeEncodeError:
                    return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


async def parse_body(
    request: web.Request, model: type[ModelT], fast: Callable[[bytes], ModelT | None] | None = None
) -> ModelT:
    """The body as ``model``; ``fast`` decodes the bodies it knows (None: not one of them)."""
    body = await _read(request)
    if len(body) <= OFF_LOOP_BYTES:
        if fast is not None and (parsed := fast(body)) is not None:
            return parsed
        return validate_body(model, json_object(body))
    return await asyncio.to_thread(_parse, model, body)


def _parse(model: type[ModelT], body: bytes) -> ModelT:
    return validate_body(model, json_object(body))


def validate_body(model: type[ModelT], data: dict[str, Any]) -> ModelT:
    """``data`` as ``model``, or a 400 naming the first field that is wrong.

    The model's :class:`CrossChecks` run only when ``data`` has a key they read.
    """
    checks: CrossChecks | None = getattr(model, "cross_checks", None)
    try:
        if checks is None or checks.keys.isdisjoint(data):
            return model.model_validate(data)
        body = model.model_validate(checks.before(data))
        checks.after(body)
        return body
    except ValidationError as exc:
        error = telling_error(exc.errors(include_url=False))
        param = error_param(error["loc"])
        message = error["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        text = f"{param}: {message}" if param else message
        raise APIError(400, text, param) from None
    except ValueError as exc:  # a cross check: about the body as a whole, like vLLM's
        raise APIError(400, str(exc)) from None


def telling_error(errors: list[Any]) -> Any:
    """The first error, unless a union's other branch took the value's shape and broke a
    limit of its own: ``stop`` as 100 strings is "at most 64 items", not "a valid string"."""
    first = errors[0]
    if not _shape_error(first["type"]):
        return first
    field = error_param(first["loc"])
    for other in errors[1:]:
        if not _shape_error(other["type"]) and error_param(other["loc"]) == field:
            return other
    return first


def _shape_error(kind: str) -> bool:
    return kind.endswith("_type") or kind in ("none_required", "literal_error", "is_instance_of")


def error_param(loc: tuple[int | str, ...]) -> str | None:
    """``("messages", 0, "content", "str")`` -> ``"messages[0].content"``."""
    param = ""
    for part in loc:
        if isinstance(part, int):
            param += f"[{part}]"
        elif part in _TYPE_TAGS or "[" in part or "-" in part:
            continue
        else:
            param += f".{part}" if param else part
    return param or None
