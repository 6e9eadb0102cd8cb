"""The common chat request, decoded and validated in C when msgspec is installed.

Most chat requests are the same shape: a model, a few text messages, a token limit and a
sampling knob or two. Parsing such a body into a dict and validating it with the pydantic
model was a sixth of a zero-latency request's server time; msgspec decodes the bytes
straight into typed structs, checking types and bounds as it goes, at a fraction of it.

Only bodies of exactly that shape take this way, and what they give is the pydantic model
pydantic would have built (same values, same ``model_fields_set``, checked by
``tests/test_plain_chat.py``). Anything else — another field, another type, a value out of
bounds, a number beyond 64 bits, an escaped surrogate — returns None and goes the usual
way, so every error is still pydantic's, word for word. The pydantic models stay the
source of the OpenAPI schema.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from llmsim.api.openai.schemas import ChatCompletionRequest, ChatMessage

Decoder = Callable[[bytes], "ChatCompletionRequest | None"]


def plain_chat_decoder() -> Decoder | None:
    """A decoder of plain chat bodies, or None without msgspec (the ``fast`` extra)."""
    try:
        import msgspec

        from llmsim.api.openai.plain_structs import PlainChat
    except ImportError:
        return None
    body_defaults = _defaults(
        ChatCompletionRequest, {"messages": [{"role": "user", "content": ""}]}
    )
    body_private = _private(ChatCompletionRequest)
    message_defaults = _defaults(ChatMessage, {"role": "user", "content": ""})
    message_private = _private(ChatMessage)
    if body_defaults is None or message_defaults is None:
        return None  # a default that a request could change: build none by hand
    decode = msgspec.json.Decoder(PlainChat).decode
    sent_fields = msgspec.to_builtins  # a struct's fields that were sent (UNSET ones left out)
    error = msgspec.ValidationError, msgspec.DecodeError

    def decode_plain(data: bytes) -> ChatCompletionRequest | None:
        if b"\\u" in data:  # escapes: surrogates are checked the usual way
            return None
        try:
            given: dict[str, Any] = sent_fields(decode(data))
        except error:
            return None
        for name in ("temperature", "top_p"):
            value = given.get(name)
            if value is not None and not math.isfinite(value):
                return None  # the model refuses infinities in its own words
        given["messages"] = [
            _construct(ChatMessage, message_defaults, sent, message_private)
            for sent in given["messages"]
        ]
        return _construct(ChatCompletionRequest, body_defaults, given, body_private)

    return decode_plain


ModelT = TypeVar("ModelT", bound=BaseModel)


def _construct(
    cls: type[ModelT],
    defaults: dict[str, Any],
    given: dict[str, Any],
    private: dict[str, Any] | None,
) -> ModelT:
    """``cls`` with ``given`` as the fields sent, as pydantic's validation leaves an instance:
    the field values in field order, the set of fields sent, no extras, private state at
    its defaults."""
    instance = cls.__new__(cls)
    values = defaults.copy()
    values.update(given)
    _set(instance, "__dict__", values)
    _set(instance, "__pydantic_fields_set__", set(given))
    _set(instance, "__pydantic_extra__", {})
    _set(instance, "__pydantic_private__", None if private is None else private.copy())
    return instance


_set = object.__setattr__


def _private(cls: type[BaseModel]) -> dict[str, Any] | None:
    """The private state pydantic gives a new instance of ``cls`` (None: it has none)."""
    defaults = {name: attr.get_default() for name, attr in cls.__private_attributes__.items()}
    return defaults or None


def _defaults(cls: type[Any], minimal: dict[str, Any]) -> dict[str, Any] | None:
    """The values a model gets for fields a body leaves out, in the model's field order;
    None if one of them could be changed in place (then it must be made per request)."""
    values = dict(cls.model_validate(minimal).__dict__)
    for name in minimal:
        values[name] = None  # replaced by every request's own
    immutable = (type(None), bool, int, float, str, tuple, frozenset)
    if not all(isinstance(value, immutable) for value in values.values()):
        return None
    return values
