"""Robustness of the HTTP surface: random bodies and the OpenAPI contract.

Hypothesis throws arbitrary JSON, field-name-shaped JSON and raw bytes at every POST
endpoint of one running server; schemathesis then drives the operations documented at
``/openapi.json``. Whatever comes in, the server must answer below 500, every error must
have vLLM's exact shape, and nothing may be left running or waiting afterwards.

The module runs twice: once with the JSON backend the install provides (orjson with
``llmsim[fast]``) and once with orjson hidden, which is what a plain install runs.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from conftest import RunningServer, start_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
)

from llmsim.api.http.openapi import build_openapi
from llmsim.api.openai.structured_fields import REFUSALS

MAX_MODEL_LEN = 256
BODY_LIMIT = 64 * 1024
ADAPTER = "fuzz-lora"
MODEL = "llmsim/sim-model"
SERVER_ARGS = [
    "--mode", "random",
    "--seed", "11",
    "--max-model-len", str(MAX_MODEL_LEN),
    "--max-running-requests", "16",
    "--max-waiting-queue-length", "64",
    "--max-request-body-size", "64KiB",
    "--lora", ADAPTER,
    "--log-level", "warning",
]  # fmt: skip
POST_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/load_lora_adapter",
    "/v1/unload_lora_adapter",
)
GENERATION_ENDPOINTS = frozenset(POST_ENDPOINTS[:2])
JSON_ENDPOINTS = frozenset({"/tokenize", "/detokenize", "/v1/embeddings", "/pooling"})
"""Endpoints whose success is a plain JSON object (schemathesis checks its schema)."""
ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    429: "RateLimitError",
}
REQUEST_TIMEOUT = 30.0
IDLE_TIMEOUT = 10.0

FUZZ_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


# -- the server -----------------------------------------------------------------


@pytest.fixture(scope="module", params=["installed-json", "stdlib-json"])
def fuzz_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One small random-mode server per JSON backend; zero latency so nothing is slow."""
    tmp = tmp_path_factory.mktemp("fuzz")
    env: dict[str, str] | None = None
    if request.param == "stdlib-json":
        path = [str(_orjson_blocker(tmp)), os.environ.get("PYTHONPATH", "")]
        env = {"PYTHONPATH": os.pathsep.join(p for p in path if p)}
    server = start_server(SERVER_ARGS, tmp, env)
    try:
        status, _, body = post(server, "/v1/completions", b"{")
        assert status == 400
        message = json.loads(body)["error"]["message"]
        uses_stdlib = request.param == "stdlib-json" or importlib.util.find_spec("orjson") is None
        assert ("Expecting property name" in message) is uses_stdlib, message
        yield server
    finally:
        server.stop()


def _orjson_blocker(tmp: Path) -> Path:
    """A directory whose ``orjson`` and ``msgspec`` modules fail to import, as on a plain
    install: every body is then parsed by the standard library and validated by pydantic."""
    directory = tmp / "no-orjson"
    directory.mkdir()
    for name in ("orjson", "msgspec"):
        (directory / f"{name}.py").write_text(f"raise ImportError('{name} hidden for this run')\n")
    return directory


# -- HTTP helpers -----------------------------------------------------------------


def post(
    server: RunningServer, path: str, body: bytes, content_type: str | None = "application/json"
) -> tuple[int, dict[str, str], bytes]:
    """POST raw bytes and read the whole answer (a stream to its end)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=REQUEST_TIMEOUT)
    try:
        headers = {"Connection": "close"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        connection.close()


def metric_samples(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def gauge(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    values = [value for (sample, _), value in samples.items() if sample == name]
    assert len(values) == 1, (name, values)
    return values[0]


def assert_idle_and_healthy(server: RunningServer) -> None:
    """/health answers 200 and, after a short settle, nothing runs or waits."""
    assert server.process.poll() is None, server.log()
    with urllib.request.urlopen(server.base_url + "/health", timeout=10) as response:
        assert response.status == 200
    deadline = time.monotonic() + IDLE_TIMEOUT
    while True:
        samples = metric_samples(server)
        running = gauge(samples, "vllm:num_requests_running")
        waiting = gauge(samples, "vllm:num_requests_waiting")
        if running == waiting == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (running, waiting) == (0, 0)
    assert "Traceback" not in server.log()


# -- what every answer must look like ------------------------------------------


def assert_error_body(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """SPEC §6: exactly ``{"error": {"message", "type", "param", "code"}}``, code = status."""
    assert headers.get("content-type", "").startswith("application/json"), (status, body)
    data = json.loads(body)
    assert isinstance(data, dict), body
    assert list(data) == ["error"], body
    error = data["error"]
    assert isinstance(error, dict), body
    assert set(error) == {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str), body
    assert error["message"], body
    assert error["type"] == ERROR_TYPES.get(status, "BadRequestError"), body
    assert error["param"] is None or isinstance(error["param"], str), body
    assert type(error["code"]) is int, body
    assert error["code"] == status, body
    assert "Traceback" not in error["message"]
    return error


def assert_stream(path: str, body: bytes, complete: bool = True) -> None:
    """SSE events of JSON chunks sharing one id and object; a complete stream ends in ``[DONE]``.

    An incomplete stream (the client stopped reading) is checked up to its last whole event.
    """
    events = body.split(b"\n\n")
    if complete:
        assert events[-2:] == [b"data: [DONE]", b""], body[-200:]
        events = events[:-2]
    else:
        events = [event for event in events[:-1] if event != b"data: [DONE]"]
    expected = "chat.completion.chunk" if path.endswith("chat/completions") else "text_completion"
    ids = set()
    finished = 0
    for event in events:
        assert event.startswith(b"data: "), event
        chunk = json.loads(event[len(b"data: ") :])
        assert chunk["object"] == expected
        ids.add(chunk["id"])
        for choice in chunk["choices"]:
            finished += choice["finish_reason"] is not None
    assert len(ids) <= 1
    if complete:
        assert len(ids) == 1
        assert finished >= 1


def assert_success(path: str, headers: dict[str, str], body: bytes) -> None:
    content_type = headers.get("content-type", "")
    if path in JSON_ENDPOINTS:
        assert content_type.startswith("application/json"), content_type
        assert isinstance(json.loads(body), dict)
        return
    if path not in GENERATION_ENDPOINTS:
        assert content_type.startswith("text/plain"), content_type
        assert body.startswith(b"Success: LoRA adapter '"), body
        return
    if content_type.startswith("text/event-stream"):
        assert_stream(path, body)
        return
    assert content_type.startswith("application/json"), content_type
    data = json.loads(body)
    expected = "chat.completion" if path.endswith("chat/completions") else "text_completion"
    assert data["object"] == expected
    assert data["choices"], data
    usage = data["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= MAX_MODEL_LEN * len(
        data["choices"]
    )


def check_answer(path: str, status: int, headers: dict[str, str], body: bytes) -> None:
    assert status < 500, (path, status, body[:500])
    assert b"Traceback" not in body
    if 200 <= status < 300:
        assert_success(path, headers, body)
    else:
        assert 400 <= status < 500, (status, body[:500])
        assert_error_body(status, headers, body)


# -- strategies -----------------------------------------------------------------

odd_text = st.text(st.characters(categories=["Cs", "Lu", "Nd", "Zs", "Cc"]), max_size=8)
"""Text with lone surrogates (JSON can escape them), control characters and spaces."""
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | odd_text
    | st.sampled_from([0, -1, 1, 2**63 - 1, 2**63, -(2**63) - 1, 10**30, 0.5, -0.0, ""])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
short_text = st.text(max_size=60)
content_parts = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", ""]) | json_values},
    optional={"text": short_text | json_values},
)
messages = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "x"])},
    optional={
        "content": short_text | st.lists(content_parts, max_size=3) | st.none() | json_values,
        "name": short_text | json_values,
    },
) | st.dictionaries(st.sampled_from(["role", "content", "name"]), json_values, max_size=3)
small_int = st.integers(-2, 6) | st.sampled_from([0, 129, 2**31, 2**63, -(2**63)])
token_count = st.integers(-2, MAX_MODEL_LEN + 20) | st.sampled_from([0, 2**63 - 1, 2**64])
number = st.floats() | st.integers(-3, 3)

FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from([MODEL, ADAPTER, "no-such-model", ""]) | odd_text | json_values,
    "messages": st.lists(messages, max_size=4) | json_values,
    "prompt": short_text
    | st.lists(short_text, max_size=4)
    | st.lists(st.integers(-2, 60_000), max_size=30)
    | st.lists(st.lists(st.integers(-1, 100), max_size=6), max_size=3)
    | json_values,
    "max_tokens": token_count | json_values,
    "max_completion_tokens": token_count | json_values,
    "n": small_int | json_values,
    "stream": st.booleans() | json_values,
    "stream_options": st.fixed_dictionaries(
        {}, optional={"include_usage": st.booleans() | json_values}
    )
    | json_values,
    "stop": short_text | st.lists(short_text, max_size=5) | json_values,
    "temperature": number | json_values,
    "top_p": number | json_values,
    "top_k": small_int | json_values,
    "seed": small_int | json_values,
    "ignore_eos": st.booleans() | json_values,
    "logit_bias": st.dictionaries(st.text(max_size=5), number, max_size=3) | json_values,
    "echo": st.booleans() | json_values,
    "lora_name": st.sampled_from([ADAPTER, MODEL, "fuzz-extra", ""]) | odd_text | json_values,
    "lora_path": st.sampled_from(["/adapters/x", ""]) | json_values,
    "lora_int_id": small_int | json_values,
}
schemas = st.recursive(
    st.fixed_dictionaries(
        {}, optional={"type": st.sampled_from(["object", "array", "string", "integer"])}
    ),
    lambda children: st.dictionaries(
        st.sampled_from(["properties", "items", "anyOf", "minItems", "pattern", "enum", "$ref"]),
        children | json_values,
        max_size=3,
    ),
    max_leaves=8,
)
FIELDS |= {
    "tools": st.lists(
        st.fixed_dictionaries(
            {"type": st.just("function") | json_values},
            optional={
                "function": st.fixed_dictionaries(
                    {"name": short_text}, optional={"parameters": schemas | json_values}
                )
                | json_values
            },
        ),
        max_size=3,
    )
    | json_values,
    "tool_choice": st.sampled_from(["none", "auto", "required"]) | json_values,
    "response_format": st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "json_object", "json_schema"]) | json_values},
        optional={"json_schema": st.fixed_dictionaries({"schema": schemas | json_values})},
    )
    | json_values,
    "guided_json": schemas | json_values,
    "guided_regex": short_text | st.sampled_from([r"\d+", "(a|b){2,}", "(?=x)", "["]),
    "guided_choice": st.lists(short_text, max_size=3) | json_values,
}


@st.composite
def field_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A JSON object mixing real field names (random values of random types) with junk."""
    names = draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=7, unique=True))
    body = {name: draw(FIELDS[name]) for name in names}
    body.update(draw(st.dictionaries(st.text(max_size=10), json_values, max_size=2)))
    return body


def _cut(data: bytes, at: int) -> bytes:
    return data[:at]


raw_bodies = (
    st.binary(max_size=600)
    | st.builds(lambda b: json.dumps(b).encode(), json_values)
    | st.builds(
        _cut, st.builds(lambda b: json.dumps(b).encode(), field_bodies()), st.integers(0, 400)
    )
    | st.builds(lambda depth: b"[" * depth + b"]" * depth, st.integers(500, 20_000))
    | st.builds(
        lambda depth: b'{"prompt":"x","deep":' + b"[" * depth + b"]" * depth + b"}",
        st.integers(100, 2_000),
    )
    | st.builds(
        lambda size: b'{"prompt":"' + b"a " * size + b'"}',
        st.integers(BODY_LIMIT // 2 - 64, BODY_LIMIT),
    )
    | st.sampled_from([b"", b"null", b"[]", b"{}", b"\xef\xbb\xbf{}", b'{"prompt":"\\ud800"}'])
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/vnd.api+json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
        None,
    ]
)
JSON_CONTENT_TYPES = (None, "application/json", "application/json; charset=utf-8")
endpoints = st.sampled_from(POST_ENDPOINTS)


# -- hypothesis fuzzing ------------------------------------------------------------


def test_arbitrary_json_values_never_break_the_server(fuzz_server: RunningServer) -> None:
    @FUZZ_SETTINGS
    @given(path=endpoints, value=json_values)
    def run(path: str, value: Any) -> None:
        status, headers, body = post(fuzz_server, path, json.dumps(value).encode())
        check_answer(path, status, headers, body)
        if not isinstance(value, dict):
            assert status == 400

    run()
    assert_idle_and_healthy(fuzz_server)


def test_bodies_with_real_field_names_and_random_values(fuzz_server: RunningServer) -> None:
    statuses: set[int] = set()

    @FUZZ_SETTINGS
    @given(path=endpoints, value=field_bodies())
    def run(path: str, value: dict[str, Any]) -> None:
        status, headers, body = post(fuzz_server, path, json.dumps(value).encode())
        check_answer(path, status, headers, body)
        statuses.add(status)

    run()
    assert 400 in statuses
    assert_idle_and_healthy(fuzz_server)


def test_raw_bytes_and_odd_content_types(fuzz_server: RunningServer) -> None:
    @FUZZ_SETTINGS
    @given(path=endpoints, body=raw_bodies, content_type=content_types)
    def run(path: str, body: bytes, content_type: str | None) -> None:
        status, headers, answer = post(fuzz_server, path, body, content_type)
        check_answer(path, status, headers, answer)
        if len(body) > BODY_LIMIT and content_type in JSON_CONTENT_TYPES:
            assert status == 413

    run()
    assert_idle_and_healthy(fuzz_server)


def test_unpaired_surrogates_are_rejected_not_crashed(fuzz_server: RunningServer) -> None:
    """JSON may escape a lone surrogate; it is not a Unicode character and cannot be echoed."""
    bodies = {
        "/v1/chat/completions": {
            "model": "\ud800",
            "messages": [{"role": "user", "content": "hi"}],
        },
        "/v1/completions": {"prompt": "a\udfffb", "max_tokens": 4},
        "/v1/load_lora_adapter": {"lora_name": "x\udc80", "lora_path": "/p"},
        "/v1/unload_lora_adapter": {"lora_name": "\ud83d"},
    }
    for path, value in bodies.items():
        status, headers, body = post(fuzz_server, path, json.dumps(value).encode())
        check_answer(path, status, headers, body)
        assert status == 400, (path, body)
    assert_idle_and_healthy(fuzz_server)


# -- the OpenAPI contract, driven by schemathesis ------------------------------------

OPENAPI = build_openapi()
schema = schemathesis.openapi.from_dict(OPENAPI).exclude(
    path_regex="^/v1/(responses|messages)"
)  # their own shapes: tests/test_adapter_fuzz.py

RUNTIME_STATE_MESSAGES = (
    "maximum context length is",
    "has already been loaded.",
    "which is greater than max allowed",
    "out of vocabulary",
    "the model's embedding size",
)
"""The context window, the loaded adapters, --max-logprobs, the tokenizer's vocabulary and
--embedding-dimension belong to the running server, not the schema."""


def documented_valid(component: str, body: dict[str, Any]) -> bool:
    """Whether ``body`` satisfies the request schema published at /openapi.json."""
    schema = {"$ref": f"#/components/schemas/{component}", "components": OPENAPI["components"]}
    return bool(jsonschema_rs.validator_for(schema).is_valid(body))


SCHEMA_VALID_BODIES = [
    pytest.param(
        "/v1/chat/completions",
        "ChatCompletionRequest",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4.0},
        False,
        id="integral-number-for-integer",
    ),
    pytest.param(
        "/v1/completions",
        "CompletionRequest",
        {"prompt": [2**64], "max_tokens": 3},
        True,
        id="token-id-beyond-64-bits",
    ),
    pytest.param(
        "/v1/completions",
        "CompletionRequest",
        {"prompt": "hi", "max_tokens": 3, "stream_options": {"include_usage": False}},
        False,
        id="stream-options-without-stream",
    ),
    pytest.param(
        "/v1/load_lora_adapter",
        "LoadLoraAdapterRequest",
        {"lora_name": "gap-adapter"},
        False,
        id="load-lora-without-path",
    ),
    pytest.param(
        "/v1/unload_lora_adapter",
        "UnloadLoraAdapterRequest",
        {"lora_int_id": 1},
        False,
        id="unload-lora-without-name",
    ),
]


@pytest.mark.parametrize(("path", "component", "body", "parser_dependent"), SCHEMA_VALID_BODIES)
def test_schema_valid_bodies_are_not_rejected(
    request: pytest.FixtureRequest,
    fuzz_server: RunningServer,
    path: str,
    component: str,
    body: dict[str, Any],
    parser_dependent: bool,
) -> None:
    """A body /openapi.json declares valid is not answered 400 (fix the server or the schema)."""
    if request.node.callspec.params["fuzz_server"] == "stdlib-json" and not parser_dependent:
        pytest.skip("does not depend on the JSON backend; checked with the installed one")
    status, headers, answer = post(fuzz_server, path, json.dumps(body).encode())
    check_answer(path, status, headers, answer)
    if documented_valid(component, body):
        assert status != 400, f"documented as valid, rejected: {answer.decode()}"


def test_served_openapi_document_is_the_one_under_test(fuzz_server: RunningServer) -> None:
    with urllib.request.urlopen(fuzz_server.base_url + "/openapi.json", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        served = json.load(response)
    assert served == json.loads(json.dumps(OPENAPI))
    live = schemathesis.openapi.from_url(fuzz_server.base_url + "/openapi.json")
    labels = {result.ok().label for result in live.get_all_operations() if isinstance(result, Ok)}
    assert {f"POST {path}" for path in POST_ENDPOINTS} <= labels


@schema.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_openapi_contract(case: schemathesis.Case, fuzz_server: RunningServer) -> None:
    response = case.call(base_url=fuzz_server.base_url, timeout=REQUEST_TIMEOUT)
    content_type = response.headers.get("content-type", [""])[0]
    is_stream = content_type.startswith("text/event-stream")
    excluded = [positive_data_acceptance]
    if is_stream:
        # OpenAPI 3.1 has no per-event schema; the stream is checked below instead.
        excluded.append(response_schema_conformance)
    if response.status_code == 413:
        # A body over --max-request-body-size is refused before its schema is looked at.
        excluded.append(negative_data_rejection)
    case.validate_response(response, excluded_checks=excluded)

    status = response.status_code
    path = case.operation.path
    headers = {"content-type": content_type}
    assert status < 500, response.content[:500]
    if status >= 400:
        assert_error_body(status, headers, response.content)
    elif is_stream and response.stream_cut_short:
        # schemathesis stops reading after a few events: the server sees a disconnect.
        assert_stream(path, response.content, complete=False)
    elif case.operation.method.upper() == "POST":
        assert_success(path, headers, response.content)
    meta = case.meta
    if meta is not None and meta.generation.mode.is_positive and status == 400:
        message = json.loads(response.content)["error"]["message"]
        allowed = RUNTIME_STATE_MESSAGES + REFUSALS
        assert any(fragment in message for fragment in allowed), (
            "a schema-valid request was rejected for a reason /openapi.json does not state: "
            + f"{message} (body: {case.body!r})"
        )


def test_server_is_idle_after_the_contract_run(fuzz_server: RunningServer) -> None:
    status, _, _ = post(
        fuzz_server,
        "/v1/chat/completions",
        json.dumps(
            {"messages": [{"role": "user", "content": "still there?"}], "max_tokens": 3}
        ).encode(),
    )
    assert status == 200
    assert_idle_and_healthy(fuzz_server)
