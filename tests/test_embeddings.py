"""``/v1/embeddings`` and ``/pooling``: the openai SDK's view, vector properties, limits
and scheduling through the engine; then the AIBrix mock-app checks that vLLM passes."""

from __future__ import annotations

import base64
import json
import math
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from conftest import RunningServer, start_server
from conftest import post_json as post

MODEL = "llmsim/sim-model"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        ["--max-model-len", "64", "--embedding-dimension", "256"],
        tmp_path_factory.mktemp("embeddings"),
    )
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_url, api_key="unused", max_retries=0)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_sdk_float_and_base64_agree(client: openai.OpenAI) -> None:
    texts = ["How do I reset my password?", "Where is the nearest station?"]
    as_float = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    as_base64 = client.embeddings.create(model=MODEL, input=texts)  # the SDK asks for base64
    assert [item.index for item in as_float.data] == [0, 1]
    for plain, packed in zip(as_float.data, as_base64.data, strict=True):
        assert len(plain.embedding) == 256
        assert math.isclose(math.sqrt(sum(v * v for v in plain.embedding)), 1.0, rel_tol=1e-9)
        assert packed.embedding == pytest.approx(plain.embedding, abs=1e-6)
    _, tokens = post_tokenize(client, texts[0])
    assert as_float.usage.prompt_tokens >= tokens
    assert as_float.usage.total_tokens == as_float.usage.prompt_tokens


def post_tokenize(client: openai.OpenAI, text: str) -> tuple[int, int]:
    url = str(client.base_url).removesuffix("/").removesuffix("/v1") + "/tokenize"
    request = urllib.request.Request(
        url,
        data=json.dumps({"prompt": text}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return response.status, json.loads(response.read())["count"]


def test_vectors_are_deterministic_and_meaningful(client: openai.OpenAI) -> None:
    texts = [
        "How do I reset my password?",
        "How can I reset my password",
        "The weather in Paris is sunny today.",
    ]
    first = [item.embedding for item in client.embeddings.create(model=MODEL, input=texts).data]
    again = client.embeddings.create(model=MODEL, input=texts[0]).data[0].embedding
    assert cosine(first[0], again) == pytest.approx(1.0)
    similar, unrelated = cosine(first[0], first[1]), cosine(first[0], first[2])
    assert similar > 0.6
    assert similar > unrelated + 0.4


def test_dimensions_truncate_and_renormalise(server: RunningServer) -> None:
    status, answer = post(server, "/v1/embeddings", {"input": "hello there", "dimensions": 32})
    assert status == 200
    vector = answer["data"][0]["embedding"]
    assert len(vector) == 32
    assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-9)
    status, answer = post(server, "/v1/embeddings", {"input": "hello", "dimensions": 257})
    assert status == 400
    assert answer["error"]["param"] == "dimensions"


def test_token_id_inputs_and_base64_layout(server: RunningServer) -> None:
    status, answer = post(
        server, "/v1/embeddings", {"input": [[1, 2, 3], [4, 5]], "encoding_format": "base64"}
    )
    assert status == 200
    assert answer["usage"]["prompt_tokens"] == 5
    raw = base64.b64decode(answer["data"][0]["embedding"])
    floats = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert len(floats) == 256
    assert math.isclose(sum(v * v for v in floats), 1.0, rel_tol=1e-5)


@pytest.mark.parametrize(
    "body",
    [
        {"input": "word " * 100},
        {"input": list(range(65))},
        {"input": 42},
        {"input": []},
        {},
        {"input": "x", "encoding_format": "int8"},
    ],
)
def test_bad_inputs_get_400(server: RunningServer, body: dict[str, Any]) -> None:
    status, answer = post(server, "/v1/embeddings", body)
    assert status == 400
    assert answer["error"]["code"] == 400


def test_unknown_model_is_404(server: RunningServer) -> None:
    status, _ = post(server, "/v1/embeddings", {"input": "x", "model": "nope"})
    assert status == 404


def test_pooling_shape(server: RunningServer) -> None:
    status, answer = post(server, "/pooling", {"input": ["first input", "second input"]})
    assert status == 200
    assert [item["object"] for item in answer["data"]] == ["pooling", "pooling"]
    assert len(answer["data"][0]["data"]) == 256
    assert answer["id"].startswith("pool-")
    status, answer = post(server, "/pooling", {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 200
    assert answer["usage"]["prompt_tokens"] > 1


def test_embeddings_are_scheduled_like_requests(llmsim_server: Any) -> None:
    """One slot and a 300 ms prefill: the second of two requests waits for the first."""
    running = llmsim_server("--max-num-seqs", "1", "--time-to-first-token", "300ms")
    durations: list[float] = []
    loads: list[int] = []

    def embed() -> None:
        start = time.monotonic()
        status, _ = post(running, "/v1/embeddings", {"input": "scheduled work"})
        assert status == 200
        durations.append(time.monotonic() - start)

    workers = [threading.Thread(target=embed) for _ in range(2)]
    for worker in workers:
        worker.start()
    time.sleep(0.1)
    with urllib.request.urlopen(running.base_url + "/load", timeout=10) as response:
        loads.append(json.loads(response.read())["server_load"])
    with urllib.request.urlopen(running.base_url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    for worker in workers:
        worker.join(20)
    assert loads == [2]
    assert any(
        line.startswith("vllm:num_requests_waiting") and line.rstrip().endswith(" 1.0")
        for line in metrics.splitlines()
    ), metrics
    assert min(durations) >= 0.25
    assert max(durations) >= 0.55


# -- AIBrix's published mock-app checks (development/app in vllm-project/aibrix) -------


@pytest.fixture(scope="module")
def aibrix_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        [
            "--served-model-name",
            "meta-llama/Llama-2-7b-hf",
            "text-embedding-ada-002",
            "test-model",
            "--api-key",
            "test-key",
        ],
        tmp_path_factory.mktemp("aibrix"),
    )
    yield running
    running.stop()


def aibrix_call(
    server: RunningServer, path: str, data: dict[str, Any] | None = None, method: str = "GET"
) -> tuple[int, Any]:
    request = urllib.request.Request(
        server.base_url + path,
        data=json.dumps(data).encode() if data is not None else None,
        method=method,
        headers={"Content-Type": "application/json", "Authorization": "Bearer test-key"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read().decode(), exc.code
    try:
        return status, json.loads(body)
    except json.JSONDecodeError:
        return status, body


def test_aibrix_vllm_endpoint_checks(aibrix_server: RunningServer) -> None:
    s = aibrix_server
    assert aibrix_call(s, "/ping")[0] == 200
    assert aibrix_call(s, "/load")[1] == {"server_load": 0}
    status, data = aibrix_call(s, "/tokenize", {"prompt": "Hello world, this is a test."}, "POST")
    assert status == 200
    assert "tokens" in data
    assert aibrix_call(s, "/tokenize", {}, "POST")[0] == 400
    status, data = aibrix_call(s, "/detokenize", {"tokens": [100, 101, 102, 103, 104]}, "POST")
    assert status == 200
    assert "prompt" in data
    assert aibrix_call(s, "/detokenize", {}, "POST")[0] == 400
    pooling = [
        {"model": "test-model", "input": "Hello world, this is a test."},
        {"model": "test-model", "input": ["first input", "second input"]},
        {"model": "test-model", "input": [100, 101, 102, 103]},
        {"model": "test-model", "messages": [{"role": "user", "content": "Hello world"}]},
    ]
    for body in pooling:
        status, data = aibrix_call(s, "/pooling", body, "POST")
        assert status == 200
        assert "data" in data
        assert "usage" in data
    assert aibrix_call(s, "/pooling", {"model": "test-model", "input": 42}, "POST")[0] == 400
    # vLLM serves the default model when the model is missing; AIBrix's mock answers 400.
    assert aibrix_call(s, "/pooling", {"input": "Hello world"}, "POST")[0] == 200
    status, metrics = aibrix_call(s, "/metrics")
    assert status == 200
    assert "vllm:" in metrics


def test_aibrix_openai_checks(aibrix_server: RunningServer) -> None:
    client = openai.OpenAI(base_url=aibrix_server.api_url, api_key="test-key", max_retries=0)
    assert client.models.list().data
    chat = client.chat.completions.create(
        model="meta-llama/Llama-2-7b-hf",
        messages=[{"role": "user", "content": "Hello!"}],
        max_tokens=50,
    )
    assert chat.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="meta-llama/Llama-2-7b-hf",
            messages=[{"role": "user", "content": "Hello!"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert any(chunk.usage is not None for chunk in chunks)
    assert (
        client.completions.create(
            model="meta-llama/Llama-2-7b-hf", prompt="Once upon a time", max_tokens=50
        )
        .choices[0]
        .text
    )
    single = client.embeddings.create(model="text-embedding-ada-002", input="Hello world")
    assert single.data[0].embedding
    several = client.embeddings.create(
        model="text-embedding-ada-002", input=["Hello", "World", "Test"]
    )
    assert len(several.data) == 3
