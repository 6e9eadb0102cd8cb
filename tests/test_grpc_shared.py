"""What gRPC shares with HTTP beyond the engine: ``GET /load`` and the response rules."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_tools")

from tests.conftest import RunningServer, post_json  # noqa: E402
from tests.hostile import Watch  # noqa: E402
from tests.test_grpc import serve, stub_for  # noqa: E402

RULES = """
[[rules]]
name = "weather"
contains = "weather"
text = "It is sunny in Oslo today."

[[rules]]
name = "refuse"
contains = "refuse"
error = { status = 429, message = "Slow down, please." }

[[rules]]
name = "city"
regex = "(?i)sunny in ([a-z]+)"
text = "Yes, {1}."
"""


@pytest.fixture(scope="module")
def ruled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, int]]:
    """Response rules, and tokens slow enough that a stream is still open when looked at."""
    folder = tmp_path_factory.mktemp("grpc-shared")
    rules = folder / "rules.toml"
    rules.write_text(RULES)
    server, port = serve(
        folder, "--responses", str(rules), "--time-to-first-token", "0",
        "--inter-token-latency", "20ms",
    )  # fmt: skip
    yield server, port
    server.stop()


def server_load(server: RunningServer) -> int:
    with urllib.request.urlopen(server.base_url + "/load", timeout=10) as response:
        return int(json.loads(response.read())["server_load"])


def wait_load(server: RunningServer, value: int) -> None:
    deadline = time.monotonic() + 10
    while server_load(server) != value:
        assert time.monotonic() < deadline, server_load(server)
        time.sleep(0.02)


def test_grpc_calls_count_in_the_load_endpoint(
    ruled: tuple[RunningServer, int], proto: Any
) -> None:
    server, port = ruled
    pb, pb_grpc = proto
    stub = stub_for(port, pb_grpc)
    assert server_load(server) == 0
    params = pb.SamplingParams(max_tokens=200, ignore_eos=True)
    call = stub.Generate(pb.GenerateRequest(text="hi", sampling_params=params, stream=True))
    assert next(call).chunk.token_ids
    assert server_load(server) == 1  # counted while its stream is open, as an HTTP stream is
    call.cancel()
    wait_load(server, 0)
    short = pb.SamplingParams(max_tokens=2, ignore_eos=True)
    [answer] = list(stub.Generate(pb.GenerateRequest(text="hi", sampling_params=short)))
    assert answer.complete.completion_tokens == 2
    assert server_load(server) == 0  # a unary call is counted out once answered


def test_response_rules_answer_grpc_as_they_answer_http(
    ruled: tuple[RunningServer, int], proto: Any
) -> None:
    server, port = ruled
    pb, pb_grpc = proto
    stub = stub_for(port, pb_grpc)
    params = pb.SamplingParams(max_tokens=50)
    [answer] = list(
        stub.Generate(pb.GenerateRequest(text="How is the weather?", sampling_params=params))
    )
    status, body = post_json(
        server, "/v1/completions", {"prompt": "How is the weather?", "max_tokens": 50}
    )
    assert status == 200
    assert body["choices"][0]["text"] == "It is sunny in Oslo today."
    done = answer.complete
    assert done.finish_reason == body["choices"][0]["finish_reason"] == "stop"
    assert done.completion_tokens == body["usage"]["completion_tokens"]
    assert done.prompt_tokens == body["usage"]["prompt_tokens"]

    streamed = list(
        stub.Generate(
            pb.GenerateRequest(text="weather, again", sampling_params=params, stream=True)
        )
    )
    ids = [token for message in streamed[:-1] for token in message.chunk.token_ids]
    assert ids == list(streamed[-1].complete.output_ids) == list(done.output_ids)

    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Generate(pb.GenerateRequest(text="please refuse", sampling_params=params)))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.details() == "Slow down, please."
    status, body = post_json(server, "/v1/completions", {"prompt": "please refuse"})
    assert (status, body["error"]["message"]) == (429, "Slow down, please.")


def test_text_without_a_rule_is_generated(ruled: tuple[RunningServer, int], proto: Any) -> None:
    _server, port = ruled
    pb, pb_grpc = proto
    stub = stub_for(port, pb_grpc)
    params = pb.SamplingParams(max_tokens=3, ignore_eos=True)
    ids = pb.TokenizedInput(input_ids=[11, 12, 13])
    [answer] = list(stub.Generate(pb.GenerateRequest(tokenized=ids, sampling_params=params)))
    assert (answer.complete.finish_reason, answer.complete.completion_tokens) == ("length", 3)


def test_a_rule_regex_over_a_megabyte_prompt_keeps_the_loop_free(
    ruled: tuple[RunningServer, int], proto: Any
) -> None:
    server, port = ruled
    pb, pb_grpc = proto
    stub = stub_for(port, pb_grpc)
    params = pb.SamplingParams(max_tokens=3)
    huge = pb.GenerateRequest(text="s" * 1_000_000, sampling_params=params)
    with Watch(server) as watch, pytest.raises(grpc.RpcError) as caught:
        list(stub.Generate(huge))  # refused: the prompt is over the context window
    watch.assert_responsive()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [answer] = list(stub.Generate(pb.GenerateRequest(text="sunny in Oslo", sampling_params=params)))
    assert answer.complete.output_ids  # the regex rule still answers short prompts
