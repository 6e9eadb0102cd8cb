"""Random bodies for ``/v1/responses`` and ``/v1/messages``: never a 500, always the route's shape.

Field names are the real ones, values anything JSON holds, so the translations meet
wrong types, missing parts and odd nesting at every level.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RunningServer, start_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MODEL = "llmsim/sim-model"

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
text = st.text(max_size=30)


def block(types: list[str]) -> st.SearchStrategy[Any]:
    keys = ["text", "id", "name", "input", "tool_use_id", "content", "call_id", "arguments"]
    return st.fixed_dictionaries(
        {"type": st.sampled_from(types) | values},
        optional=dict.fromkeys(keys, text | values),
    )


response_items = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["message", "function_call", "function_call_output"]) | values,
            "role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]) | values,
            "content": text | st.lists(block(["input_text", "output_text", "x"]), max_size=3),
            "call_id": text | values,
            "name": text | values,
            "arguments": text | values,
            "output": text | values,
        },
    ),
    max_size=4,
)
anthropic_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "robot"]) | values},
        optional={
            "content": text
            | st.lists(block(["text", "tool_use", "tool_result", "image"]), max_size=3)
        },
    ),
    max_size=4,
)
tools = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["function", "web_search"]) | values,
            "name": text | values,
            "parameters": values,
            "input_schema": st.just({"type": "object"}) | values,
        },
    ),
    max_size=2,
)

RESPONSES = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from([MODEL, "nope"]) | values,
        "input": text | response_items | values,
        "instructions": text | values,
        "max_output_tokens": st.integers(-1, 50) | values,
        "temperature": st.floats(-1, 3) | values,
        "tools": tools | values,
        "tool_choice": st.sampled_from(["auto", "none", "required"]) | values,
        "text": st.fixed_dictionaries({"format": values}) | values,
        "stream": st.booleans() | values,
        "store": st.booleans() | values,
        "previous_response_id": st.sampled_from(["resp_x", ""]) | values,
    },
)
MESSAGES = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from([MODEL, "nope"]) | values,
        "messages": anthropic_messages | values,
        "system": text | st.lists(block(["text"]), max_size=2) | values,
        "max_tokens": st.integers(-1, 50) | values,
        "stop_sequences": st.lists(text, max_size=3) | values,
        "temperature": st.floats(-1, 3) | values,
        "tools": tools | values,
        "tool_choice": st.fixed_dictionaries({"type": values}, optional={"name": values}),
        "stream": st.booleans() | values,
    },
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(["--mode", "echo"], tmp_path_factory.mktemp("adapter-fuzz"))
    yield running
    running.stop()


def send(server: RunningServer, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        server.base_url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(body=RESPONSES)
def test_responses_never_fail_on_random_bodies(server: RunningServer, body: Any) -> None:
    status, answer = send(server, "/v1/responses", body)
    assert status < 500, answer[:500]
    if status >= 400:
        error = json.loads(answer)["error"]
        assert error["code"] == status
        assert error["message"]
    elif body.get("stream") is True:
        assert answer.rstrip().split(b"\n")[0] == b"event: response.created"
        assert b"event: response.completed" in answer
    else:
        assert json.loads(answer)["object"] == "response"


@FUZZ
@given(body=MESSAGES)
def test_messages_never_fail_on_random_bodies(server: RunningServer, body: Any) -> None:
    status, answer = send(server, "/v1/messages", body)
    assert status < 500, answer[:500]
    if status >= 400:
        data = json.loads(answer)
        assert data["type"] == "error"
        assert set(data["error"]) == {"type", "message"}
    elif body.get("stream") is True:
        assert answer.split(b"\n")[0] == b"event: message_start"
        assert answer.rstrip().endswith(b'{"type":"message_stop"}')
    else:
        assert json.loads(answer)["type"] == "message"
