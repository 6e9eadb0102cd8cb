"""The C decoder of plain chat bodies builds exactly what pydantic builds, or nothing.

For any body, :func:`plain_chat_decoder`'s result is either None (the body goes the usual
way, and its errors are pydantic's) or a model equal to pydantic's in every field value
and type, in field order, with the same fields marked as sent, for the body and every
message.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from llmsim.api.http.jsonio import loads
from llmsim.api.openai.plain_chat import plain_chat_decoder
from llmsim.api.openai.schemas import ChatCompletionRequest

pytest.importorskip("msgspec")
DECODE = plain_chat_decoder()

ROLES = ["system", "developer", "user", "assistant", "tool", "function", "robot", ""]
NUMBERS = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, 1, 2, 128, 129, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 1.0, 64.0, 0.5, -0.0, 1e308, 1e-300]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=8))
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=4), SCALARS, max_size=2),
)
MESSAGE = st.dictionaries(
    st.sampled_from(["role", "content", "name", "tool_calls", "tool_call_id", "other"]),
    st.one_of(st.sampled_from(ROLES), st.text(max_size=12), VALUES),
    max_size=4,
)
BODY_KEYS = [
    "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stream",
    "ignore_eos", "seed", "user", "stop", "logprobs", "tools", "extra_field",
]  # fmt: skip
BODY = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(MESSAGE, max_size=3), VALUES)},
    optional=dict.fromkeys(BODY_KEYS, VALUES),
)


PLAIN_VALUES = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=6))
NEAR_PLAIN = st.fixed_dictionaries(
    {
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(ROLES[:5]), "content": st.text(max_size=12)},
                optional={"name": st.one_of(st.none(), st.text(max_size=4))},
            ),
            min_size=1,
            max_size=3,
        )
    },
    optional=dict.fromkeys(BODY_KEYS[:10], PLAIN_VALUES),
)


def pydantic_model(data: bytes) -> ChatCompletionRequest | None:
    try:
        return ChatCompletionRequest.model_validate(loads(data))
    except (ValidationError, ValueError):
        return None


def assert_same(fast: Any, slow: Any) -> None:
    assert type(fast) is type(slow)
    assert list(fast.__dict__) == list(slow.__dict__)
    for name, value in slow.__dict__.items():
        if name == "messages":
            continue
        assert fast.__dict__[name] == value, name
        assert type(fast.__dict__[name]) is type(value), name
    assert fast.__pydantic_fields_set__ == slow.__pydantic_fields_set__
    assert fast.__pydantic_extra__ == slow.__pydantic_extra__
    assert fast.__pydantic_private__ == slow.__pydantic_private__
    assert len(fast.messages) == len(slow.messages)
    for mine, theirs in zip(fast.messages, slow.messages, strict=True):
        assert mine.__dict__ == theirs.__dict__
        assert mine.__pydantic_fields_set__ == theirs.__pydantic_fields_set__
        assert mine.__pydantic_extra__ == theirs.__pydantic_extra__
    assert fast == slow


def check(data: bytes) -> bool:
    """True when the decoder took the body."""
    assert DECODE is not None
    fast, slow = DECODE(data), pydantic_model(data)
    if fast is None:
        return False
    assert slow is not None, data
    assert_same(fast, slow)
    return True


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BODY)
def test_any_body_is_decoded_as_pydantic_would_or_left_alone(body: dict[str, Any]) -> None:
    check(json.dumps(body).encode())


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(NEAR_PLAIN)
def test_near_plain_bodies_are_decoded_as_pydantic_would_or_left_alone(
    body: dict[str, Any],
) -> None:
    check(json.dumps(body).encode())


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64},
        {
            "messages": [
                {"role": "system", "content": ""},
                {"role": "user", "content": "x", "name": None},
            ]
        },
        {"messages": [{"role": "assistant", "content": "a", "name": "bot"}], "temperature": 1},
        {"messages": [{"role": "developer", "content": "d"}], "n": 128, "seed": -(2**63)},
        {
            "messages": [{"role": "user", "content": "é ☃"}],
            "stream": None,
            "user": None,
            "top_p": 1,
        },
        {
            "messages": [{"role": "user", "content": "x"}],
            "ignore_eos": True,
            "max_completion_tokens": 1,
        },
    ],
)
def test_plain_bodies_take_the_c_way(body: dict[str, Any]) -> None:
    assert check(json.dumps(body, ensure_ascii=False).encode())


@pytest.mark.parametrize(
    "data",
    [
        b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 64.0}',
        b'{"messages": [{"role": "user", "content": "x"}], "temperature": 1e400}',
        b'{"messages": [{"role": "user", "content": "x"}], "seed": 99999999999999999999}',
        b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
        b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
        b'{"messages": [{"role": "user", "content": "x"}], "stop": "y"}',
        b'{"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}',
        b'{"messages": [{"role": "user", "content": ["x"]}]}',
        b'{"messages": []}',
        b'{"messages": [{"role": "user", "content": "x"}], "n": true}',
        b'{"messages": [{"role": "user", "content": "x"}], "model": "a", "model": 5}',
        b"[1, 2]",
        b'{"messages": [{"role": "user", "content": "x"}',
    ],
)
def test_other_bodies_go_the_usual_way(data: bytes) -> None:
    assert not check(data)
