"""Hostile schemas and regexes through every API that takes them, against a real server.

Each attack is sent while ``GET /health`` and an ordinary chat request are polled: both
must keep answering within a second, and the attack must end in a 400 in the API's error
shape that names the field (as that API spells it) and the limit.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RunningServer, start_server
from hostile import CHAT, Reply, Watch, assert_error, call
from hypothesis import HealthCheck, given, settings
from test_hostile_structured import _SCHEMAS as SCHEMAS
from test_hostile_structured import _regexes
from test_hostile_structured import _small as small_regex
from test_hostile_structured import _valid as valid_instance

from llmsim.engine.structured import LinearPattern

REGEXES = _regexes(anchors=False)

MODEL = "llmsim/sim-model"
ASK = [{"role": "user", "content": "hi"}]
PROMPT_TIMEOUT = 1.0
"""Seconds /health and an ordinary chat request may take while an attack is answered."""


def _doubling_tree(levels: int) -> dict[str, Any]:
    """Thirty definitions, each an object of two of the previous: 2**30 values."""
    defs: dict[str, Any] = {"d0": {"type": "integer"}}
    for level in range(1, levels + 1):
        ref = {"$ref": f"#/$defs/d{level - 1}"}
        defs[f"d{level}"] = {
            "type": "object",
            "properties": {"x": ref, "y": ref},
            "required": ["x", "y"],
        }
    return {"$defs": defs, "$ref": f"#/$defs/d{levels}"}


TREE = _doubling_tree(30)
SELF = {"$ref": "#"}
ENDLESS = {"type": "object", "properties": {"n": {"$ref": "#"}}, "required": ["n"]}


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": ASK, "max_tokens": 5, **extra}


def _json_schema(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


ATTACKS: list[tuple[str, str, bytes, str, str]] = [
    (
        "chat response_format",
        "/v1/chat/completions",
        json.dumps(_chat(response_format=_json_schema(TREE))).encode(),
        "response_format",
        "max_values",
    ),
    (
        "chat tool, required",
        "/v1/chat/completions",
        json.dumps(
            _chat(
                tools=[
                    {"type": "function", "function": {"name": "ok", "parameters": {}}},
                    {"type": "function", "function": {"name": "f", "parameters": SELF}},
                ],
                tool_choice="required",
            )
        ).encode(),
        "tools[1].function.parameters",
        "refers to itself",
    ),
    (
        "responses text.format",
        "/v1/responses",
        json.dumps(
            {
                "model": MODEL,
                "input": "hi",
                "text": {"format": {"type": "json_schema", "name": "x", "schema": TREE}},
            }
        ).encode(),
        "text.format",
        "max_values",
    ),
    (
        "responses tool",
        "/v1/responses",
        json.dumps(
            {
                "model": MODEL,
                "input": "hi",
                "tools": [{"type": "function", "name": "f", "parameters": ENDLESS}],
                "tool_choice": "required",
            }
        ).encode(),
        "tools[0].parameters",
        "max_depth",
    ),
    (
        "messages input_schema",
        "/v1/messages",
        json.dumps(
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": ASK,
                "tools": [{"name": "f", "input_schema": ENDLESS}],
                "tool_choice": {"type": "any"},
            }
        ).encode(),
        "tools[0].input_schema",
        "max_depth",
    ),
    (
        "messages output_config.format",
        "/v1/messages",
        json.dumps(
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": ASK,
                "output_config": {"format": {"type": "json_schema", "schema": SELF}},
            }
        ).encode(),
        "output_config.format",
        "refers to itself",
    ),
    (
        "structured_outputs.regex",
        "/v1/chat/completions",
        json.dumps(_chat(structured_outputs={"regex": "(?:(?:(?:)?){9999}){9999}"})).encode(),
        "structured_outputs.regex",
        "max_regex_steps",
    ),
    (
        "guided_regex huge repeat",
        "/v1/completions",
        json.dumps({"model": MODEL, "prompt": "hi", "guided_regex": "(?:){4294967294}"}).encode(),
        "guided_regex",
        "max_repeat",
    ),
    (
        "guided_json NaN",
        "/v1/completions",
        json.dumps({"model": MODEL, "prompt": "hi", "guided_json": '{"const": NaN}'}).encode(),
        "guided_json",
        "not a valid JSON schema",
    ),
    (
        "tiny multipleOf",
        "/v1/chat/completions",
        json.dumps(
            _chat(
                response_format=_json_schema(
                    {"type": "number", "multipleOf": 1e-300, "minimum": 1e10, "maximum": 1e12}
                )
            )
        ).encode(),
        "response_format",
        "multipleOf",
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(["--mode", "echo"], tmp_path_factory.mktemp("hostile"))
    yield running
    running.stop()


def _post(server: RunningServer, path: str, data: bytes, timeout: float) -> tuple[int, Any]:
    request = urllib.request.Request(
        server.base_url + path, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _timed_get(server: RunningServer, path: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(server.base_url + path, timeout=5) as response:
        assert response.status == 200
    return time.perf_counter() - start


def _timed_chat(server: RunningServer) -> float:
    start = time.perf_counter()
    status, _ = _post(server, "/v1/chat/completions", json.dumps(_chat()).encode(), 5)
    assert status == 200
    return time.perf_counter() - start


@pytest.mark.parametrize(
    ("path", "data", "param", "fragment"),
    [attack[1:] for attack in ATTACKS],
    ids=[attack[0] for attack in ATTACKS],
)
def test_an_attack_is_refused_while_the_server_keeps_answering(
    server: RunningServer, path: str, data: bytes, param: str, fragment: str
) -> None:
    outcome: dict[str, Any] = {}

    def attack() -> None:
        outcome["answer"] = _post(server, path, data, 20)

    attacker = threading.Thread(target=attack)
    attacker.start()
    slowest = 0.0
    polls = 0
    while attacker.is_alive() or polls < 2:
        slowest = max(slowest, _timed_get(server, "/health"), _timed_chat(server))
        polls += 1
    attacker.join(20)
    assert slowest < PROMPT_TIMEOUT, f"the server stalled for {slowest:.2f}s"
    status, body = outcome["answer"]
    assert status == 400, body
    error = body["error"]
    assert error["type"] in ("BadRequestError", "invalid_request_error")
    assert error["message"].startswith(f"{param}: "), error["message"]
    assert fragment in error["message"]
    if path != "/v1/messages":  # Anthropic's error shape has no param
        assert error["param"] == param


def test_recursive_schemas_with_a_way_out_are_answered(server: RunningServer) -> None:
    schema = {
        "type": "object",
        "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}},
        "required": ["kids"],
    }
    body = _chat(response_format=_json_schema(schema), max_tokens=500)
    status, answer = _post(server, "/v1/chat/completions", json.dumps(body).encode(), 20)
    assert status == 200
    value = json.loads(answer["choices"][0]["message"]["content"])
    assert isinstance(value["kids"], list)


# -- response rules meeting long client text and client tool schemas ---------------------------

RULES = """
[[rules]]
name = "run"
regex = "(?s)run (.*)"
tool_call = { name = "run", arguments = { code = "{1}" } }

[[rules]]
name = "weather"
regex = "(?i)weather in (\\\\w+)"
text = "It is sunny in {1}."
"""


@pytest.fixture(scope="module")
def ruled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("ruled")
    (folder / "rules.toml").write_text(RULES)
    args = ["--responses", str(folder / "rules.toml"), "--max-model-len", "200000"]
    running = start_server([*args, "--max-request-body-size", "8MiB"], folder)
    yield running
    running.stop()


def _run_tool(schema: dict[str, Any]) -> list[dict[str, Any]]:
    parameters = {"type": "object", "properties": {"code": schema}}
    return [{"type": "function", "function": {"name": "run", "parameters": parameters}}]


def _ask(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 3,
        **extra,
    }


def _answered_while_watched(server: RunningServer, body: dict[str, Any]) -> Reply:
    with Watch(server) as watch:
        reply = call(server, CHAT, body, timeout=60)
    watch.assert_responsive()
    assert reply.seconds < 10, reply.seconds
    return reply


@pytest.mark.parametrize("text", ["w" * 1_000_000, "run " + "x" * 700_000])
def test_a_rule_regex_over_a_megabyte_of_text_keeps_the_loop_free(
    ruled: RunningServer, text: str
) -> None:
    reply = _answered_while_watched(ruled, _ask(text))
    assert reply.status in (200, 400), reply.body[:300]  # 400: the prompt is over the context
    assert "Internal" not in reply.body.decode()


def test_a_catastrophic_tool_pattern_against_a_captured_text_is_bounded(
    ruled: RunningServer,
) -> None:
    body = _ask("run " + "a" * 300_000 + "!", tools=_run_tool({"pattern": "^(a+)+b$"}))
    reply = _answered_while_watched(ruled, body)
    # A mismatch found within max_match_steps, or a pattern left unchecked past it.
    assert reply.status in (200, 500), reply.body[:300]
    if reply.status == 500:
        assert "does not match" in reply.json()["error"]["message"]


def test_a_pattern_with_thousands_of_live_states_is_left_unchecked_in_time(
    ruled: RunningServer,
) -> None:
    schema = {"anyOf": [{"pattern": "(?:a|aa)" * (3000 + i) + "b"} for i in range(4)]}
    reply = _answered_while_watched(ruled, _ask("run " + "a" * 5_000, tools=_run_tool(schema)))
    assert reply.status == 200, reply.body[:300]
    call_made = reply.json()["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call_made["name"] == "run"


@pytest.mark.parametrize(
    "parameters",
    [
        {"type": "object", "properties": {"code": {"enum": 5}}},
        {"type": "object", "properties": {"code": {"type": 5}}},
        {"type": "object", "properties": {"code": {"type": [["string"]]}}},
        {"type": "object", "required": 5},
        {"type": "object", "properties": 5},
        {"type": "object", "properties": {"code": {"maximum": "x", "maxLength": None}}},
    ],
)
def test_a_rule_meeting_a_malformed_tool_schema_is_never_a_500(
    ruled: RunningServer, parameters: dict[str, Any]
) -> None:
    tools = [{"type": "function", "function": {"name": "run", "parameters": parameters}}]
    reply = call(ruled, CHAT, _ask("run x", tools=tools))
    assert reply.status in (200, 400), reply.body[:300]
    if reply.status == 400:
        assert_error(reply, 400)


# -- property-based, black-box: random schemas and regexes through the real server -------------


@pytest.fixture(scope="module")
def watched(server: RunningServer) -> Iterator[Watch]:
    with Watch(server) as watch:
        yield watch
    watch.assert_responsive()


def _constrained(server: RunningServer, field: dict[str, Any]) -> tuple[Reply, str]:
    reply = call(server, CHAT, _chat(max_tokens=None, **field), timeout=30)
    assert reply.seconds < 5, reply.seconds
    assert reply.status in (200, 400), reply.body[:300]  # never a 500
    if reply.status == 400:
        error = assert_error(reply, 400)
        if error["param"] is None:  # a bound beyond float range: refused as it is read
            assert error["message"].startswith("Invalid JSON body"), error
        else:
            assert error["param"].startswith(next(iter(field))), error
        return reply, ""
    choice = reply.json()["choices"][0]
    return reply, choice["message"]["content"] if choice["finish_reason"] == "stop" else ""


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(root=SCHEMAS, a=SCHEMAS, b=SCHEMAS)
def test_random_schemas_are_answered_with_valid_json_or_a_400(
    server: RunningServer, watched: Watch, root: Any, a: Any, b: Any
) -> None:
    schema = {"$defs": {"a": a, "b": b}, **root} if isinstance(root, dict) else {"anyOf": [root]}
    _, content = _constrained(server, {"response_format": _json_schema(schema)})
    if content:
        assert valid_instance(schema, json.loads(content)), (schema, content[:300])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(pattern=REGEXES)
def test_random_regexes_are_answered_with_a_full_match_or_a_400(
    server: RunningServer, watched: Watch, pattern: str
) -> None:
    _, content = _constrained(server, {"structured_outputs": {"regex": pattern}})
    if content and small_regex(pattern):
        assert LinearPattern(rf"\A(?:{pattern})\Z").search(content), (pattern, content[:100])
