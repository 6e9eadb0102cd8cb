"""``/v1/responses`` and ``/v1/messages`` from outside: the real CLI and the official SDKs.

Both routes run through the chat pipeline, so besides the SDKs parsing every answer these
check that they count in the metrics, obey the limits, abort on disconnect and honour
failure injection and the latency model like chat does.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import anthropic
import jsonschema_rs
import openai
import pytest
from conftest import RunningServer, start_server
from prometheus_client.parser import text_string_to_metric_families

MODEL = "llmsim/sim-model"
KEY = "test-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Echo mode (the answer is the last user message), a small context and an API key."""
    running = start_server(
        ["--mode", "echo", "--max-model-len", "256", "--api-key", KEY],
        tmp_path_factory.mktemp("adapters"),
    )
    yield running
    running.stop()


def oai(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_url, api_key=KEY, max_retries=0, timeout=30)


def claude(server: RunningServer, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key=key, max_retries=0, timeout=30)


def post(
    server: RunningServer, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        server.base_url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "x-api-key": KEY, **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def anthropic_error(status: int, body: dict[str, Any], expected: int) -> str:
    assert status == expected, body
    assert set(body) == {"type", "error"}
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    message: str = body["error"]["message"]
    assert message
    return message


def vllm_error(status: int, body: dict[str, Any], expected: int) -> dict[str, Any]:
    assert status == expected, body
    assert set(body) == {"error"}
    assert body["error"]["code"] == expected
    return dict(body["error"])


def successes(server: RunningServer) -> float:
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "vllm:request_success":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


def gauges(server: RunningServer) -> tuple[float, float]:
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {
        family.name: family.samples[0].value
        for family in text_string_to_metric_families(text)
        if family.name in ("vllm:num_requests_running", "vllm:num_requests_waiting")
    }
    return values["vllm:num_requests_running"], values["vllm:num_requests_waiting"]


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- Responses ------------------------------------------------------------------------


def test_responses_create_retrieve_and_follow_up(server: RunningServer) -> None:
    client = oai(server)
    first = client.responses.create(
        model=MODEL, input="Tell me about routers.", instructions="Be brief.", max_output_tokens=64
    )
    assert first.id.startswith("resp_")
    assert first.status == "completed"
    assert first.output_text == "Tell me about routers."
    assert first.usage is not None
    assert first.usage.output_tokens > 0
    assert first.usage.total_tokens == first.usage.input_tokens + first.usage.output_tokens
    assert first.instructions == "Be brief."
    assert first.max_output_tokens == 64

    again = client.responses.retrieve(first.id)
    assert again.id == first.id
    assert again.output_text == first.output_text

    follow_up = client.responses.create(
        model=MODEL, input="And gateways?", previous_response_id=first.id
    )
    assert follow_up.output_text == "And gateways?"
    assert follow_up.previous_response_id == first.id
    assert follow_up.usage is not None
    # The earlier turn is part of the prompt now.
    assert follow_up.usage.input_tokens > first.usage.input_tokens


def test_responses_input_items_with_a_function_call_round_trip(server: RunningServer) -> None:
    tools: Any = [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    response = oai(server).responses.create(
        model=MODEL,
        tools=tools,
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"}]},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "Oslo"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "rain"},
        ],
    )
    assert response.status == "completed"
    assert response.tools[0].type == "function"


def test_responses_stream_events_and_the_stored_result(server: RunningServer) -> None:
    client = oai(server)
    with client.responses.stream(model=MODEL, input="Stream this answer please.") as stream:
        received = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in received]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert kinds.count("response.output_text.delta") == final.usage.output_tokens  # type: ignore[union-attr]
    assert [event.sequence_number for event in received] == list(range(len(received)))
    assert final.output_text == "Stream this answer please."
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_responses_not_stored_and_unknown_ids_are_404(server: RunningServer) -> None:
    client = oai(server)
    unstored = client.responses.create(model=MODEL, input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    status, body = post(
        server, "/v1/responses", {"input": "hi", "previous_response_id": "resp_missing"}
    )
    error = vllm_error(status, body, 404)
    assert error["message"] == "Response with id 'resp_missing' not found."


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({}, 400, "input"),
        ({"input": []}, 400, "input"),
        ({"input": [{"role": "robot", "content": "x"}]}, 400, "input[0]"),
        ({"input": "hi", "max_output_tokens": 0}, 400, "max_output_tokens"),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, 400, "tools[0]"),
        ({"input": "hi", "model": "nope"}, 404, "model"),
        ({"input": "word " * 400}, 400, "input"),
    ],
)
def test_responses_errors_have_vllms_shape(
    server: RunningServer, body: dict[str, Any], status: int, param: str
) -> None:
    error = vllm_error(*post(server, "/v1/responses", body), status)
    assert error["param"] == param
    assert "input input" not in error["message"]


# -- Messages ---------------------------------------------------------------------------


def test_messages_create_with_system_and_a_stop_sequence(server: RunningServer) -> None:
    message = claude(server).messages.create(
        model=MODEL,
        max_tokens=64,
        system=[{"type": "text", "text": "You are terse."}],
        messages=[{"role": "user", "content": "Route this request, then stop here please."}],
        stop_sequences=["stop"],
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "stop"
    [block] = message.content
    assert block.type == "text"
    assert block.text == "Route this request, then "
    assert message.usage.output_tokens > 0

    plain = claude(server).messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Hello."}]
    )
    assert plain.stop_reason == "end_turn"
    assert plain.stop_sequence is None


def test_messages_stream_and_count_tokens_agree_with_usage(server: RunningServer) -> None:
    client = claude(server)
    conversation: Any = [{"role": "user", "content": "Count these words for me."}]
    with client.messages.stream(model=MODEL, max_tokens=64, messages=conversation) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert final.content[0].type == "text"
    assert final.content[0].text == "Count these words for me."
    assert final.stop_reason == "end_turn"
    counted = client.messages.count_tokens(model=MODEL, messages=conversation)
    assert counted.input_tokens == final.usage.input_tokens > 0


def test_messages_accept_tools_and_a_tool_result_history(server: RunningServer) -> None:
    message = claude(server).messages.create(
        model=MODEL,
        max_tokens=64,
        tools=[{"name": "lookup", "input_schema": {"type": "object", "properties": {}}}],
        messages=[
            {"role": "user", "content": "Look it up."},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "found"}],
            },
        ],
    )
    assert message.stop_reason in ("end_turn", "tool_use")


def test_messages_errors_have_anthropics_shape(server: RunningServer) -> None:
    hi = [{"role": "user", "content": "hi"}]
    message = anthropic_error(*post(server, "/v1/messages", {"model": MODEL, "messages": hi}), 400)
    assert "max_tokens" in message
    status, body = post(server, "/v1/messages", {"model": "nope", "max_tokens": 4, "messages": hi})
    anthropic_error(status, body, 404)
    long = [{"role": "user", "content": "word " * 400}]
    status, body = post(server, "/v1/messages", {"model": MODEL, "max_tokens": 4, "messages": long})
    assert "maximum context length" in anthropic_error(status, body, 400)
    with pytest.raises(anthropic.NotFoundError):
        claude(server).messages.create(model="nope", max_tokens=4, messages=hi)  # type: ignore[arg-type]
    with pytest.raises(anthropic.AuthenticationError) as raised:
        claude(server, key="wrong").messages.create(model=MODEL, max_tokens=4, messages=hi)  # type: ignore[arg-type]
    assert raised.value.body["type"] == "error"  # type: ignore[index]


def test_either_header_carries_the_api_key(server: RunningServer) -> None:
    body = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    bearer = {"x-api-key": "", "Authorization": f"Bearer {KEY}"}
    assert post(server, "/v1/messages", body, bearer)[0] == 200
    assert post(server, "/v1/responses", {"input": "hi"})[0] == 200  # x-api-key
    status, error = post(server, "/v1/responses", {"input": "hi"}, {"x-api-key": "wrong"})
    vllm_error(status, error, 401)


def test_failure_injection_and_metrics_cover_both_routes(server: RunningServer) -> None:
    force = {"X-Return-Error": "503"}
    hi = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    anthropic_error(*post(server, "/v1/messages", hi, force), 503)
    vllm_error(*post(server, "/v1/responses", {"input": "hi"}, force), 503)
    before = successes(server)
    assert post(server, "/v1/messages", hi)[0] == 200
    assert post(server, "/v1/responses", {"input": "hi"})[0] == 200
    wait_until(lambda: successes(server) == before + 2)


def read_stream(server: RunningServer, path: str, body: dict[str, Any]) -> bytes:
    request = urllib.request.Request(
        server.base_url + path,
        data=json.dumps({**body, "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        try:
            return bytes(response.read())
        except http.client.IncompleteRead as cut:
            return bytes(cut.partial)


def test_max_tokens_and_stream_cuts_on_both_routes(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    running = start_server(
        ["--mode", "random", "--seed", "5", "--stream-cut-rate", "100"],
        tmp_path_factory.mktemp("cut"),
    )
    try:
        talk = {"max_tokens": 40, "messages": [{"role": "user", "content": "Talk."}]}
        cut = read_stream(running, "/v1/messages", {"model": MODEL, **talk})
        assert cut.startswith(b"event: message_start")
        assert b"message_stop" not in cut
        cut = read_stream(running, "/v1/responses", {"input": "Talk.", "max_output_tokens": 40})
        assert cut.startswith(b"event: response.created")
        assert b"response.completed" not in cut
        message = claude(running).messages.create(
            model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "Talk a lot."}]
        )
        assert message.stop_reason == "max_tokens"
        assert message.usage.output_tokens == 2
        response = oai(running).responses.create(
            model=MODEL, input="Talk a lot.", max_output_tokens=2
        )
        assert response.status == "incomplete"
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
        assert response.usage is not None
        assert response.usage.output_tokens == 2
    finally:
        running.stop()


async def _open_stream(
    session: aiohttp.ClientSession, server: RunningServer, path: str, body: dict[str, Any]
) -> aiohttp.ClientResponse:
    response = await session.post(
        server.base_url + path, json={**body, "stream": True}, headers={"x-api-key": KEY}
    )
    assert response.status == 200
    await response.content.readuntil(b"\n\n")  # the opening event arrives before any token
    return response


async def test_limits_latency_and_disconnects(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    running = start_server(
        [
            "--max-running-requests",
            "1",
            "--max-waiting-queue-length",
            "1",
            "--time-to-first-token",
            "300ms",
            "--inter-token-latency",
            "2s",
            "--api-key",
            KEY,
        ],
        tmp_path_factory.mktemp("limits"),
    )
    messages = {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "x"}]}
    try:
        async with aiohttp.ClientSession() as session:
            first = await _open_stream(session, running, "/v1/messages", messages)
            second = await _open_stream(session, running, "/v1/responses", {"input": "x"})
            await asyncio.to_thread(wait_until, lambda: gauges(running) == (1, 1))
            status, body = await asyncio.to_thread(post, running, "/v1/messages", messages)
            assert "waiting queue is full" in anthropic_error(status, body, 429)
            status, body = await asyncio.to_thread(post, running, "/v1/responses", {"input": "x"})
            vllm_error(status, body, 429)
            # Closing the connections frees the running and the waiting sequence at once.
            first.close()
            second.close()
            await asyncio.to_thread(wait_until, lambda: gauges(running) == (0, 0), 5.0)
        # The latency model applies: a one-token answer takes the time to first token.
        started = time.monotonic()
        short = {**messages, "max_tokens": 1}
        status, _ = await asyncio.to_thread(post, running, "/v1/messages", short)
        assert status == 200
        assert 0.25 <= time.monotonic() - started < 1.9
    finally:
        running.stop()


def test_openapi_documents_both_routes_and_their_answers(server: RunningServer) -> None:
    with urllib.request.urlopen(server.base_url + "/openapi.json", timeout=10) as response:
        document = json.load(response)
    paths = document["paths"]
    assert {"/v1/responses", "/v1/responses/{response_id}", "/v1/messages"} <= set(paths)
    assert "/v1/messages/count_tokens" in paths
    components = document["components"]

    def validate(component: str, body: dict[str, Any]) -> None:
        schema = {"$ref": f"#/components/schemas/{component}", "components": components}
        jsonschema_rs.validator_for(schema).validate(body)

    hi = [{"role": "user", "content": "hi"}]
    request = {"model": MODEL, "max_tokens": 8, "messages": hi, "stop_sequences": ["x"]}
    validate("MessagesRequest", request)
    validate("AnthropicMessage", post(server, "/v1/messages", request)[1])
    validate("AnthropicErrorResponse", post(server, "/v1/messages", {"model": MODEL})[1])
    validate("ResponsesRequest", {"input": "hi", "max_output_tokens": 8})
    validate("ResponseObject", post(server, "/v1/responses", {"input": "hi"})[1])
