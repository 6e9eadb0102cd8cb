"""The common chat body as msgspec structs (:mod:`plain_chat`); needs the ``fast`` extra.

The fields, types and bounds are those of :class:`~llmsim.api.openai.schemas.ChatCompletionRequest`
for the few fields a plain request sends; a field left out is ``UNSET``, so the fields a
client sent are known exactly.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from llmsim.api.openai.schemas import INT64_MAX, MAX_N

Limit = Annotated[int, Meta(ge=1, le=INT64_MAX)]
Int64 = Annotated[int, Meta(ge=-(2**63), le=INT64_MAX)]
Count = Annotated[int, Meta(ge=1, le=MAX_N)]
Probability = Annotated[float, Meta(gt=0.0, le=1.0)]
Temperature = Annotated[float, Meta(ge=0.0)]


class PlainMessage(Struct, forbid_unknown_fields=True):
    role: Literal["system", "developer", "user", "assistant"]
    content: str
    name: str | UnsetType | None = UNSET


class PlainChat(Struct, forbid_unknown_fields=True):
    messages: Annotated[list[PlainMessage], Meta(min_length=1)]
    model: str | UnsetType | None = UNSET
    max_tokens: Limit | UnsetType | None = UNSET
    max_completion_tokens: Limit | UnsetType | None = UNSET
    temperature: Temperature | UnsetType | None = UNSET
    top_p: Probability | UnsetType | None = UNSET
    n: Count | UnsetType = UNSET
    stream: bool | UnsetType | None = UNSET
    ignore_eos: bool | UnsetType = UNSET
    seed: Int64 | UnsetType | None = UNSET
    user: str | UnsetType | None = UNSET
