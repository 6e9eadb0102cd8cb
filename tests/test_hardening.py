"""Hardening, seen from outside: limits, authentication, injected failures, readiness,
graceful shutdown and secure defaults of a real ``llmsim serve`` process.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from conftest import RunningServer, free_port, start_server
from prometheus_client.parser import text_string_to_metric_families

from llmsim.settings.model import Settings

MODEL = "llmsim/sim-model"
API_KEY = "s3cret"
MAX_MODEL_LEN = 256
REQUEST_TIMEOUT = 10.0
SPEC_ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    413: "BadRequestError",
    429: "RateLimitError",
}
FAILURE_TYPES = (
    "rate_limit",
    "invalid_api_key",
    "context_length",
    "server_error",
    "invalid_request",
    "model_not_found",
)
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
HI = [{"role": "user", "content": "hi"}]


# -- HTTP helpers -------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    server: RunningServer,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    content_type: str | None = "application/json",
) -> Reply:
    """One request on a fresh connection; the whole answer is read."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    sent = {"Connection": "close", **(headers or {})}
    if data is not None and content_type is not None:
        sent["Content-Type"] = content_type
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        payload = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, payload)
    finally:
        connection.close()


def assert_error(reply: Reply, status: int) -> dict[str, Any]:
    """The reply is an error with ``status`` in the exact shape of SPEC section 6."""
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers.get("content-type", "").startswith("application/json")
    payload = reply.json()
    assert isinstance(payload, dict)
    assert set(payload) == {"error"}
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    expected = "InternalServerError" if status >= 500 else SPEC_ERROR_TYPES[status]
    assert error["type"] == expected
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["code"] == status
    return error  # type: ignore[no-any-return]


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metrics(server: RunningServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=REQUEST_TIMEOUT) as response:
        return parse_metrics(response.read().decode())


def metric(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    wanted = set(labels.items())
    return sum(value for (key, have), value in samples.items() if key == name and wanted <= have)


def injected(server: RunningServer, fault_type: str) -> float:
    return metric(metrics(server), "llmsim:injected_failures_total", type=fault_type)


def successes(server: RunningServer) -> float:
    return metric(metrics(server), "vllm:request_success_total")


def wait_idle(server: RunningServer, timeout: float = 10.0) -> None:
    """Poll until nothing runs or waits; fail if that does not happen in time."""
    deadline = time.monotonic() + timeout
    while True:
        samples = metrics(server)
        busy = metric(samples, "vllm:num_requests_running") + metric(
            samples, "vllm:num_requests_waiting"
        )
        if busy == 0:
            return
        assert time.monotonic() < deadline, f"still {busy} requests running or waiting"
        time.sleep(0.05)


def assert_healthy(server: RunningServer) -> None:
    assert call(server, "GET", "/health").status == 200


@dataclass
class StreamResult:
    status: int
    events: list[bytes] = field(default_factory=list)
    event_times: list[float] = field(default_factory=list)
    done: bool = False
    broken: bool = False
    ended_at: float = 0.0

    def content_tokens(self) -> int:
        """Chunks that carry generated text (chat ``delta.content`` or completion ``text``)."""
        count = 0
        for event in self.events:
            if event == b"[DONE]":
                continue
            for choice in json.loads(event).get("choices", []):
                text = choice.get("delta", {}).get("content") or choice.get("text")
                count += bool(text)
        return count


async def read_stream(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    started: asyncio.Event | None = None,
    after_events: int = 1,
) -> StreamResult:
    """POST a streaming request and read SSE events until the end or a broken connection."""
    async with session.post(url, json=body) as response:
        result = StreamResult(response.status)
        try:
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                event = line[len(b"data: ") :].strip()
                result.events.append(event)
                result.event_times.append(time.monotonic())
                if event == b"[DONE]":
                    result.done = True
                if started is not None and len(result.events) >= after_events:
                    started.set()
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError):
            result.broken = True
        result.ended_at = time.monotonic()
        return result


def client_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30),
        connector=aiohttp.TCPConnector(force_close=True),
    )


async def raw_exchange(port: int, data: bytes, timeout: float) -> Reply:
    """Write ``data`` on a raw socket and read one response with a Content-Length body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *header_lines = head.decode("latin-1").strip().split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in header_lines)
        }
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(reader.readexactly(length), timeout)
        return Reply(int(status_line.split()[1]), headers, body)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def wait_refused(port: int, timeout: float) -> bool:
    """True once a new TCP connection to ``port`` is refused, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
        except ConnectionRefusedError:
            return True
        except (OSError, asyncio.TimeoutError):
            pass
        else:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await asyncio.sleep(0.02)
    return False


async def wait_exit(server: RunningServer, timeout: float = 15.0) -> int:
    return await asyncio.to_thread(server.process.wait, timeout)


def module_server(
    tmp_path_factory: pytest.TempPathFactory, name: str, *args: str
) -> Iterator[RunningServer]:
    server = start_server(list(args), tmp_path_factory.mktemp(name))
    try:
        yield server
    finally:
        server.stop()


# -- 1. limits ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from module_server(
        tmp_path_factory,
        "limited",
        "--max-request-body-size",
        "64KiB",
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--seed",
        "3",
    )


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Default limits (4 MiB bodies), so deeply nested JSON reaches the parser."""
    yield from module_server(tmp_path_factory, "default", "--seed", "5")


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS, "/v1/load_lora_adapter"])
def test_body_over_the_limit_gets_413(limited_server: RunningServer, path: str) -> None:
    padding = "a" * (64 * 1024)
    body = {"messages": HI, "prompt": "hi", "lora_name": "x", "lora_path": "y", "pad": padding}
    error = assert_error(call(limited_server, "POST", path, body), 413)
    assert "too large" in error["message"].lower()
    assert_healthy(limited_server)


def test_body_just_under_the_limit_is_accepted(limited_server: RunningServer) -> None:
    body = {"messages": HI, "max_tokens": 2, "pad": "a" * (60 * 1024)}
    reply = call(limited_server, "POST", CHAT, body)
    assert reply.status == 200, reply.body[:300]
    assert reply.json()["object"] == "chat.completion"


async def test_chunked_body_over_the_limit_gets_413(limited_server: RunningServer) -> None:
    """Without a Content-Length the limit still holds while the body is read."""

    async def chunks() -> Any:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"a" * 10_000
        yield b'"}]}'

    async with (
        client_session() as session,
        session.post(
            limited_server.base_url + CHAT,
            data=chunks(),
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        body = await response.read()
        assert "Content-Length" not in response.request_info.headers
    headers = {k.lower(): v for k, v in response.headers.items()}
    assert_error(Reply(response.status, headers, body), 413)


async def test_huge_declared_content_length_is_refused_without_reading_the_body(
    limited_server: RunningServer,
) -> None:
    head = (
        f"POST {CHAT} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{limited_server.port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {1024**3}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    reply = await raw_exchange(limited_server.port, head + b'{"messages": [', timeout=5.0)
    assert time.monotonic() - started < 5.0
    error = assert_error(reply, 413)
    assert str(1024**3) in error["message"]
    async with client_session() as session, session.get(limited_server.base_url + "/health") as r:
        assert r.status == 200


@pytest.mark.parametrize(
    ("target", "path"),
    [("OPTIONS *", "*"), ("GET http://example.test", ""), ("GET /nope%0A", "/nope\n")],
)
async def test_unusual_request_targets_get_a_json_404(
    limited_server: RunningServer, target: str, path: str
) -> None:
    """Targets no route can match (asterisk and absolute form, a newline in the path) still
    get vLLM's error shape, with a length that frames the body on a kept-alive connection."""
    head = f"{target} HTTP/1.1\r\nHost: 127.0.0.1:{limited_server.port}\r\n\r\n".encode()
    reply = await raw_exchange(limited_server.port, head, timeout=5.0)
    error = assert_error(reply, 404)
    assert error["message"] == f"Not Found: {path}"
    assert reply.headers["content-type"] == "application/json"


def test_prompt_plus_max_tokens_beyond_max_model_len(limited_server: RunningServer) -> None:
    fits = call(limited_server, "POST", CHAT, {"messages": HI, "max_tokens": 1})
    assert fits.status == 200
    prompt_tokens = fits.json()["usage"]["prompt_tokens"]
    room = MAX_MODEL_LEN - prompt_tokens
    at_limit = call(limited_server, "POST", CHAT, {"messages": HI, "max_tokens": room})
    assert at_limit.status == 200, at_limit.body[:300]
    over = call(limited_server, "POST", CHAT, {"messages": HI, "max_tokens": room + 1})
    error = assert_error(over, 400)
    assert "maximum context length" in error["message"]
    assert str(MAX_MODEL_LEN) in error["message"]

    long_prompt = " word" * (MAX_MODEL_LEN + 10)
    for path, body in (
        (COMPLETIONS, {"prompt": long_prompt, "max_tokens": 1}),
        (CHAT, {"messages": [{"role": "user", "content": long_prompt}]}),
        (COMPLETIONS, {"prompt": "hi", "max_tokens": MAX_MODEL_LEN}),
    ):
        error = assert_error(call(limited_server, "POST", path, body), 400)
        assert "maximum context length" in error["message"], (path, error)
    wait_idle(limited_server)


DEEP = 100_000
ABSURD_BODIES: dict[str, Callable[[dict[str, Any]], tuple[bytes, str | None]]] = {
    "n-million": lambda base: (json.dumps({**base, "n": 10**6}).encode(), "application/json"),
    "max-tokens-1e20": lambda base: (
        json.dumps({**base, "max_tokens": 10**20}).encode(),
        "application/json",
    ),
    "temperature-1e309": lambda base: (
        json.dumps(base).encode()[:-1] + b', "temperature": 1e309}',
        "application/json",
    ),
    "nested-100000": lambda base: (
        json.dumps(base).encode()[:-1] + b', "extra": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        "application/json",
    ),
    "not-utf-8": lambda base: (
        json.dumps(base).encode()[:-1] + b', "user": "\xff\xfe\xc3("}',
        "application/json",
    ),
    "text-plain": lambda base: (json.dumps(base).encode(), "text/plain"),
    "empty": lambda base: (b"", "application/json"),
    "null": lambda base: (b"null", "application/json"),
}
EXPECTED_PARAM = {"n-million": "n", "max-tokens-1e20": "max_tokens"}


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
@pytest.mark.parametrize("case", list(ABSURD_BODIES))
def test_absurd_values_get_400_quickly_and_the_server_stays_healthy(
    default_server: RunningServer, path: str, case: str
) -> None:
    base: dict[str, Any] = {"messages": HI} if path == CHAT else {"prompt": "hi"}
    body, content_type = ABSURD_BODIES[case](base)
    started = time.monotonic()
    reply = call(default_server, "POST", path, body, content_type=content_type)
    assert time.monotonic() - started < REQUEST_TIMEOUT
    error = assert_error(reply, 400)
    if case in EXPECTED_PARAM:
        assert error["param"] == EXPECTED_PARAM[case]
    assert_healthy(default_server)
    # The same base body without the absurd part is served normally.
    assert call(default_server, "POST", path, {**base, "max_tokens": 2}).status == 200
    wait_idle(default_server)


# -- 2. authentication --------------------------------------------------------------


AUTH_WAYS = {
    "flag": ((f"--api-key={API_KEY}",), {}),
    "VLLM_API_KEY": ((), {"VLLM_API_KEY": API_KEY}),
    "LLMSIM_API_KEY": ((), {"LLMSIM_API_KEY": API_KEY}),
}
BAD_AUTHORIZATIONS: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong-key"},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer " + API_KEY[:-1]},
    {"Authorization": "Bearer " + API_KEY.upper()},
    {"Authorization": "Basic " + API_KEY},
    {"Authorization": API_KEY},
]
GOOD = {"Authorization": f"Bearer {API_KEY}"}
PROTECTED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/models", None),
    ("POST", CHAT, {"messages": HI, "max_tokens": 3}),
    ("POST", COMPLETIONS, {"prompt": "hi", "max_tokens": 3}),
    ("POST", "/v1/load_lora_adapter", {"lora_name": "auth-lora", "lora_path": "/adapters/a"}),
    ("POST", "/v1/unload_lora_adapter", {"lora_name": "auth-lora"}),
]
OPEN_ENDPOINTS = ("/health", "/metrics", "/version", "/health/ready")


@pytest.fixture(scope="module", params=list(AUTH_WAYS))
def auth_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    args, env = AUTH_WAYS[request.param]
    server = start_server(list(args), tmp_path_factory.mktemp("auth"), env)
    try:
        yield server
    finally:
        server.stop()


def test_protected_routes_reject_missing_or_wrong_keys(auth_server: RunningServer) -> None:
    for method, path, body in PROTECTED:
        for headers in BAD_AUTHORIZATIONS:
            reply = call(auth_server, method, path, body, headers)
            error = assert_error(reply, 401)
            assert API_KEY not in reply.body.decode(), (path, headers)
            assert API_KEY not in json.dumps(reply.headers)
            assert error["type"] == "AuthenticationError"
    # Nothing reached the engine or the adapter registry.
    assert successes(auth_server) == 0
    listed = call(auth_server, "GET", "/v1/models", headers=GOOD).json()
    assert [card["id"] for card in listed["data"]] == [MODEL]


def test_the_right_key_is_accepted_everywhere(auth_server: RunningServer) -> None:
    for method, path, body in PROTECTED:
        reply = call(auth_server, method, path, body, GOOD)
        assert reply.status == 200, (path, reply.body[:300])
    lowercase_scheme = call(
        auth_server, "GET", "/v1/models", headers={"Authorization": f"bearer {API_KEY}"}
    )
    assert lowercase_scheme.status == 200


def test_unknown_paths_under_protected_prefixes_need_the_key_too(
    auth_server: RunningServer,
) -> None:
    for path in ("/v1/nope", "/v1/models%0a", "/admin/nope"):
        reply = call(auth_server, "GET", path)
        assert_error(reply, 401)
        assert reply.headers["www-authenticate"] == "Bearer"
        assert_error(call(auth_server, "GET", path, headers=GOOD), 404)


def test_operational_endpoints_stay_open(auth_server: RunningServer) -> None:
    for path in OPEN_ENDPOINTS:
        assert call(auth_server, "GET", path).status == 200, path
        assert call(auth_server, "GET", path, headers={"Authorization": "Bearer x"}).status == 200


def test_openai_sdk_with_and_without_the_key(auth_server: RunningServer) -> None:
    client = openai.OpenAI(
        base_url=auth_server.api_url, api_key=API_KEY, max_retries=0, timeout=REQUEST_TIMEOUT
    )
    assert [model.id for model in client.models.list()] == [MODEL]
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert chat.choices[0].message.content
    completion = client.completions.create(model=MODEL, prompt="hi", max_tokens=4)
    assert completion.choices[0].text
    wrong = openai.OpenAI(
        base_url=auth_server.api_url, api_key="not-it", max_retries=0, timeout=REQUEST_TIMEOUT
    )
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 401


def test_the_key_is_not_in_the_log_at_default_level(auth_server: RunningServer) -> None:
    for method, path, body in PROTECTED:
        call(auth_server, method, path, body, GOOD)
    assert call(auth_server, "GET", "/v1/models", headers=GOOD).status == 200
    log = auth_server.log()
    assert "127.0.0.1" in log  # the banner is there, so the log is not just empty
    assert API_KEY not in log


def test_the_key_is_not_in_the_log_at_debug_level(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--api-key", API_KEY, "--log-level", "debug")
    client = openai.OpenAI(
        base_url=server.api_url, api_key=API_KEY, max_retries=0, timeout=REQUEST_TIMEOUT
    )
    client.models.list()
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    for method, path, body in PROTECTED:
        assert call(server, method, path, body, GOOD).status == 200
        assert call(server, method, path, body, {"Authorization": "Bearer nope"}).status == 401
    call(server, "POST", CHAT, b"{", GOOD)
    assert server.stop() == 0
    log = server.log()
    assert "/v1/load_lora_adapter" in log  # debug logging really was on (access log)
    assert "Traceback" not in log
    assert API_KEY not in log


def test_an_unrelated_api_key_variable_does_not_enable_authentication(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    """Only --api-key, LLMSIM_API_KEY and VLLM_API_KEY switch authentication on."""
    server = llmsim_server(env={"API_KEY": "belongs-to-another-program"})
    assert call(server, "GET", "/v1/models").status == 200


# -- 3. failure injection -----------------------------------------------------------


def test_rate_limit_injection_answers_every_inference_request_with_429(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server(
        "--failure-injection-rate", "100", "--failure-types", "rate_limit", "--seed", "1"
    )
    bodies = [
        (CHAT, {"messages": HI, "max_tokens": 3}),
        (COMPLETIONS, {"prompt": "hi", "max_tokens": 3}),
        (CHAT, {"messages": HI, "max_tokens": 3, "stream": True}),
    ]
    count = 0
    for _ in range(7):
        for path, body in bodies:
            error = assert_error(call(server, "POST", path, body), 429)
            assert error["type"] == "RateLimitError"
            count += 1
    samples = metrics(server)
    assert metric(samples, "llmsim:injected_failures_total", type="rate_limit") == count
    assert metric(samples, "llmsim:injected_failures_total") == count
    assert metric(samples, "vllm:request_success_total") == 0
    assert metric(samples, "vllm:prompt_tokens_total") == 0
    # Only inference is affected.
    assert call(server, "GET", "/v1/models").status == 200


def test_all_failure_types_are_injected_in_the_spec_shape(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--failure-injection-rate", "100", "--seed", "21")
    statuses: dict[int, int] = {}
    messages: list[str] = []
    total = 60
    for index in range(total):
        path, body = (
            (CHAT, {"messages": HI, "max_tokens": 3})
            if index % 2
            else (COMPLETIONS, {"prompt": "hi", "max_tokens": 3})
        )
        reply = call(server, "POST", path, body)
        assert reply.status in {400, 401, 404, 429, 503}, reply.body[:300]
        messages.append(assert_error(reply, reply.status)["message"])
        statuses[reply.status] = statuses.get(reply.status, 0) + 1
    assert set(statuses) == {400, 401, 404, 429, 503}
    assert any("maximum context length" in message for message in messages)
    samples = metrics(server)
    counts = {t: metric(samples, "llmsim:injected_failures_total", type=t) for t in FAILURE_TYPES}
    assert all(counts.values()), counts
    assert sum(counts.values()) == total
    assert counts["rate_limit"] == statuses[429]
    assert counts["invalid_api_key"] == statuses[401]
    assert counts["server_error"] == statuses[503]
    assert counts["model_not_found"] == statuses[404]
    assert counts["context_length"] + counts["invalid_request"] == statuses[400]
    assert metric(samples, "vllm:request_success_total") == 0


def test_x_return_error_forces_a_status(default_server: RunningServer) -> None:
    before_success = successes(default_server)
    before_limit = injected(default_server, "rate_limit")
    before_server_error = injected(default_server, "server_error")
    body = {"messages": HI, "max_tokens": 3}
    for _ in range(3):
        reply = call(default_server, "POST", CHAT, body, {"X-Return-Error": "503"})
        assert assert_error(reply, 503)["type"] == "InternalServerError"
        reply = call(default_server, "POST", CHAT, body, {"X-Return-Error": "429"})
        assert assert_error(reply, 429)["type"] == "RateLimitError"
    reply = call(default_server, "POST", COMPLETIONS, {"prompt": "hi"}, {"X-Return-Error": "429"})
    assert_error(reply, 429)
    for bad in ("abc", "200", "600", ""):
        error = assert_error(call(default_server, "POST", CHAT, body, {"X-Return-Error": bad}), 400)
        assert "X-Return-Error" in error["message"], bad
    assert injected(default_server, "rate_limit") - before_limit == 4
    assert injected(default_server, "server_error") - before_server_error == 3
    assert successes(default_server) == before_success
    # Without the header (and at rate 0) the same request succeeds and is counted.
    assert call(default_server, "POST", CHAT, body).status == 200
    assert successes(default_server) == before_success + 1


@pytest.fixture(scope="module")
def cutting_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from module_server(
        tmp_path_factory,
        "cut",
        "--stream-cut-rate",
        "100",
        "--inter-token-latency",
        "2ms",
        "--seed",
        "9",
    )


async def test_every_stream_is_cut_before_done(cutting_server: RunningServer) -> None:
    before = await asyncio.to_thread(injected, cutting_server, "stream_cut")
    streams = 6
    async with client_session() as session:
        for index in range(streams):
            path, body = (CHAT, {"messages": HI}) if index % 2 else (COMPLETIONS, {"prompt": "hi"})
            body = {**body, "max_tokens": 12, "ignore_eos": True, "stream": True}
            result = await read_stream(session, cutting_server.base_url + path, body)
            assert result.status == 200
            assert not result.done, result.events
            assert b"[DONE]" not in result.events
            assert result.content_tokens() < 12
    after = await asyncio.to_thread(injected, cutting_server, "stream_cut")
    assert after - before == streams
    await asyncio.to_thread(wait_idle, cutting_server)
    samples = await asyncio.to_thread(metrics, cutting_server)
    assert metric(samples, "vllm:num_requests_running") == 0
    assert metric(samples, "vllm:num_requests_waiting") == 0


def test_non_streaming_requests_are_not_cut(cutting_server: RunningServer) -> None:
    before = injected(cutting_server, "stream_cut")
    for path, body in ((CHAT, {"messages": HI}), (COMPLETIONS, {"prompt": "hi"})):
        for _ in range(3):
            reply = call(
                cutting_server, "POST", path, {**body, "max_tokens": 8, "ignore_eos": True}
            )
            assert reply.status == 200, reply.body[:300]
            assert reply.json()["usage"]["completion_tokens"] == 8
    assert injected(cutting_server, "stream_cut") == before
    assert_healthy(cutting_server)


# -- 4. readiness and shutdown ------------------------------------------------------


def test_startup_duration_gates_readiness_and_inference(tmp_path: Path) -> None:
    launched = time.monotonic()
    server = start_server(["--startup-duration", "1.5s"], tmp_path)
    try:
        listening = time.monotonic()
        assert call(server, "GET", "/health").status == 200
        for path in ("/health/ready", "/ready"):
            assert_error(call(server, "GET", path), 503)
        chat = call(server, "POST", CHAT, {"messages": HI, "max_tokens": 2})
        assert_error(chat, 503)
        assert_error(call(server, "POST", COMPLETIONS, {"prompt": "hi", "max_tokens": 2}), 503)
        # These answers came while loading: the checks above took well under a second.
        assert time.monotonic() - listening < 1.0

        deadline = listening + 10.0
        while call(server, "GET", "/health/ready").status != 200:
            assert time.monotonic() < deadline, "never became ready"
            time.sleep(0.05)
        ready_at = time.monotonic()
        assert ready_at - launched >= 1.45  # not before the simulated loading ended
        assert ready_at - listening < 5.0
        assert call(server, "GET", "/ready").status == 200
        assert call(server, "POST", CHAT, {"messages": HI, "max_tokens": 2}).status == 200
    finally:
        assert server.stop() == 0


async def test_sigterm_drains_in_flight_and_queued_requests(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server(
        "--inter-token-latency", "100ms", "--max-running-requests", "1", "--seed", "4"
    )
    base = server.base_url
    async with client_session() as session:
        started = asyncio.Event()
        streaming = asyncio.create_task(
            read_stream(
                session,
                base + CHAT,
                {"messages": HI, "max_tokens": 20, "ignore_eos": True, "stream": True},
                started,
                after_events=2,
            )
        )
        await asyncio.wait_for(started.wait(), 10)

        async def queued_request() -> tuple[int, dict[str, Any]]:
            body = {"prompt": "hi", "max_tokens": 5, "ignore_eos": True}
            async with session.post(base + COMPLETIONS, json=body) as response:
                return response.status, await response.json()

        queued = asyncio.create_task(queued_request())
        deadline = time.monotonic() + 10
        while True:
            async with session.get(base + "/metrics") as response:
                samples = parse_metrics(await response.text())
            if metric(samples, "vllm:num_requests_waiting") == 1:
                break
            assert time.monotonic() < deadline, "the second request never queued"
            await asyncio.sleep(0.02)
        assert metric(samples, "vllm:num_requests_running") == 1

        server.process.send_signal(signal.SIGTERM)
        assert await wait_refused(server.port, timeout=5.0), "still accepting after SIGTERM"
        assert not streaming.done()  # refused while the stream was still in flight

        stream = await asyncio.wait_for(streaming, 20)
        status, completion = await asyncio.wait_for(queued, 20)
    assert stream.status == 200
    assert stream.done
    assert not stream.broken
    assert stream.content_tokens() == 20
    assert status == 200
    assert completion["usage"]["completion_tokens"] == 5
    assert await wait_exit(server) == 0
    log = await asyncio.to_thread(server.log)
    assert "Traceback" not in log


async def test_shutdown_timeout_cuts_the_stream_and_exits_promptly(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--inter-token-latency", "100ms", "--shutdown-timeout", "500ms")
    body = {"messages": HI, "max_tokens": 60, "ignore_eos": True, "stream": True}
    async with client_session() as session:
        started = asyncio.Event()
        streaming = asyncio.create_task(
            read_stream(session, server.base_url + CHAT, body, started, after_events=2)
        )
        await asyncio.wait_for(started.wait(), 10)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        stream = await asyncio.wait_for(streaming, 20)
        code = await wait_exit(server)
        exited = time.monotonic()
    assert code == 0
    assert not stream.done
    assert stream.content_tokens() < 60
    # The stream kept flowing during the grace period, then was cut shortly after it.
    after_signal = [t for t in stream.event_times if t > signalled]
    assert len(after_signal) >= 2
    assert stream.ended_at - signalled >= 0.4
    assert stream.ended_at - signalled < 3.0
    # The natural end of the stream was about 6 s away.
    assert exited - signalled < 4.0
    log = await asyncio.to_thread(server.log)
    assert "Traceback" not in log


async def test_sigint_also_drains_and_exits_zero(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--inter-token-latency", "50ms")
    body = {"prompt": "hi", "max_tokens": 10, "ignore_eos": True, "stream": True}
    async with client_session() as session:
        started = asyncio.Event()
        streaming = asyncio.create_task(
            read_stream(session, server.base_url + COMPLETIONS, body, started)
        )
        await asyncio.wait_for(started.wait(), 10)
        server.process.send_signal(signal.SIGINT)
        stream = await asyncio.wait_for(streaming, 20)
    assert stream.done
    assert stream.content_tokens() == 10
    assert await wait_exit(server) == 0
    log = await asyncio.to_thread(server.log)
    assert "Traceback" not in log
    assert "KeyboardInterrupt" not in log


# -- 5. secure defaults -------------------------------------------------------------


def test_default_host_is_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LLMSIM_"):
            monkeypatch.delenv(name)
    assert Settings().host == "127.0.0.1"


def _listening_addresses(port: int, table: Path) -> list[str]:
    """Local addresses (hex, as the kernel prints them) listening on ``port``."""
    addresses = []
    for line in table.read_text().splitlines()[1:]:
        fields = line.split()
        address, _, hex_port = fields[1].partition(":")
        if int(hex_port, 16) == port and fields[3] == "0A":
            addresses.append(address)
    return addresses


def test_serve_without_host_listens_on_loopback_only(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "no-host.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSIM_")}
    env["COLUMNS"] = "200"
    command = [sys.executable, "-m", "llmsim", "serve", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = RunningServer(process, port, log_path, command)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, server.log()
            try:
                if call(server, "GET", "/health").status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "did not start"
            time.sleep(0.05)
        tcp, tcp6 = Path("/proc/net/tcp"), Path("/proc/net/tcp6")
        if tcp.exists():
            assert _listening_addresses(port, tcp) == ["0100007F"]
        if tcp6.exists():
            assert _listening_addresses(port, tcp6) == []
    finally:
        assert server.stop() == 0
    assert f"http://127.0.0.1:{port}" in server.log()


def test_request_bodies_are_not_logged_at_the_default_level(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    marker = "quokka-marmalade-4417"
    server = llmsim_server("--max-model-len", str(MAX_MODEL_LEN))
    message = [{"role": "user", "content": f"please repeat {marker}"}]
    assert call(server, "POST", CHAT, {"messages": message, "max_tokens": 4}).status == 200
    stream = call(server, "POST", CHAT, {"messages": message, "max_tokens": 4, "stream": True})
    assert b"[DONE]" in stream.body
    assert call(server, "POST", COMPLETIONS, {"prompt": marker, "max_tokens": 4}).status == 200
    too_long = {"prompt": f" {marker}" * MAX_MODEL_LEN, "max_tokens": 4}
    assert_error(call(server, "POST", COMPLETIONS, too_long), 400)
    assert_error(call(server, "POST", CHAT, {"messages": message, "n": marker}), 400)
    assert_error(call(server, "POST", CHAT, f'{{"messages": "{marker}"'.encode()), 400)
    assert_error(call(server, "POST", CHAT, {"messages": message, "model": marker}), 404)
    assert server.stop() == 0
    log = server.log()
    assert f"http://127.0.0.1:{server.port}" in log
    assert marker not in log
