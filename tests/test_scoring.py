"""Score, rerank, classify, Cohere's ``/v2/embed`` and ``/invocations`` of a pooling model,
through plain HTTP against the real CLI; a generation model answers the pooling routes 404."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import RunningServer, start_server
from conftest import post_json as post

MODEL = "llmsim/sim-model"
QUERY = "How do I reset my password?"
DOCUMENTS = [
    "Our office is closed on Sundays.",
    "To reset your password, open the login page and choose reset password.",
    "How do I reset my password?",
    "Trains leave every ten minutes.",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        ["--runner", "pooling", "--max-model-len", "64", "--embedding-dimension", "64"],
        tmp_path_factory.mktemp("scoring"),
    )
    yield running
    running.stop()


def tokens(server: RunningServer, text: str) -> int:
    status, body = post(server, "/tokenize", {"prompt": text})
    assert status == 200
    return int(body["count"])


def prompt_token_histogram(server: RunningServer) -> tuple[float, float]:
    """``vllm:request_prompt_tokens``' count and sum: one observation per finished sequence."""
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    values = []
    for series in ("count", "sum"):
        pattern = rf"^vllm:request_prompt_tokens_{series}\{{[^}}]*\}} (\S+)$"
        match = re.search(pattern, text, re.MULTILINE)
        assert match is not None
        values.append(float(match.group(1)))
    return values[0], values[1]


def test_score_one_against_many_is_cosine_and_counts_both_texts(server: RunningServer) -> None:
    status, body = post(server, "/score", {"model": MODEL, "text_1": QUERY, "text_2": DOCUMENTS})
    assert status == 200, body
    assert body["id"].startswith("score-")
    assert body["object"] == "list"
    scores = [item["score"] for item in body["data"]]
    assert [item["index"] for item in body["data"]] == [0, 1, 2, 3]
    assert {item["object"] for item in body["data"]} == {"score"}
    assert scores[2] == pytest.approx(1.0)  # the query against itself
    assert scores[1] > scores[0]
    assert scores[1] > scores[3]
    expected = sum(tokens(server, QUERY) + tokens(server, doc) for doc in DOCUMENTS)
    assert body["usage"]["prompt_tokens"] == expected == body["usage"]["total_tokens"]
    _, again = post(server, "/v1/score", {"queries": [QUERY], "documents": DOCUMENTS})
    assert [item["score"] for item in again["data"]] == scores  # deterministic, either form


def test_score_pairs_element_by_element_and_vllms_errors(server: RunningServer) -> None:
    status, body = post(server, "/score", {"data_1": ["a b", "c d"], "data_2": ["a b", "x y"]})
    assert status == 200
    assert body["data"][0]["score"] == pytest.approx(1.0)
    assert body["data"][1]["score"] < 0.5
    status, body = post(server, "/score", {"text_1": ["a", "b"], "text_2": ["a", "b", "c"]})
    assert (status, body["error"]["message"]) == (
        400,
        "Input lengths must be either 1:1, 1:N or N:N",
    )
    status, body = post(server, "/score", {"text_1": [], "text_2": ["a"]})
    assert (status, body["error"]["message"]) == (400, "At least one text element must be given")
    status, body = post(server, "/score", {"text_1": "a"})
    assert status == 400
    assert "text_1/text_2" in body["error"]["message"]
    status, body = post(server, "/score", {"model": "other", "text_1": "a", "text_2": "b"})
    assert (status, body["error"]["code"]) == (404, 404)
    long_text = " ".join(["word"] * 60)
    status, body = post(server, "/score", {"text_1": long_text, "text_2": long_text})
    assert status == 400
    assert "maximum context length is 64" in body["error"]["message"]


def test_cohere_style_rerank_as_a_rag_library_sends_it(server: RunningServer) -> None:
    """The body Cohere's v2 client (and LangChain's or LlamaIndex's Cohere reranker) posts."""
    count_before, sum_before = prompt_token_histogram(server)
    request = {
        "model": MODEL,
        "query": QUERY,
        "documents": DOCUMENTS,
        "top_n": 2,
        "return_documents": False,
        "max_tokens_per_doc": 4096,
    }
    status, body = post(server, "/v2/rerank", request)
    assert status == 200, body
    assert body["id"].startswith("rerank-")
    assert body["model"] == MODEL
    results = body["results"]
    assert [result["index"] for result in results] == [2, 1]  # itself first, then the answer
    assert results[0]["relevance_score"] >= results[1]["relevance_score"]
    assert all("document" not in result for result in results)
    expected = sum(tokens(server, QUERY) + tokens(server, doc) for doc in DOCUMENTS)
    assert body["usage"] == {"prompt_tokens": expected, "total_tokens": expected}
    count_after, sum_after = prompt_token_histogram(server)
    assert count_after - count_before == len(DOCUMENTS)  # one engine sequence per pair
    assert sum_after - sum_before == expected


def test_jina_style_rerank_returns_every_document_best_first(server: RunningServer) -> None:
    documents: list[Any] = [{"text": doc} for doc in DOCUMENTS]
    answers = [
        post(server, path, {"query": QUERY, "documents": documents})
        for path in ("/rerank", "/v1/rerank")
    ]
    for status, body in answers:
        assert status == 200
        scores = [result["relevance_score"] for result in body["results"]]
        assert scores == sorted(scores, reverse=True)
        assert len(scores) == 4
        texts = {result["index"]: result["document"]["text"] for result in body["results"]}
        assert texts == dict(enumerate(DOCUMENTS))
    assert answers[0][1]["results"] == answers[1][1]["results"]
    status, body = post(server, "/rerank", {"query": QUERY, "documents": [{"title": "x"}]})
    assert status == 400
    assert body["error"]["param"] == "documents.0"


def test_classify_is_deterministic_and_use_activation_gives_logits(server: RunningServer) -> None:
    inputs = ["I loved this film", "Terrible service"]
    status, body = post(server, "/classify", {"model": MODEL, "input": inputs})
    assert status == 200, body
    assert body["id"].startswith("classify-")
    for item in body["data"]:
        assert item["num_classes"] == 2
        assert item["label"] in ("LABEL_0", "LABEL_1")
        assert sum(item["probs"]) == pytest.approx(1.0)
        assert item["label"] == f"LABEL_{item['probs'].index(max(item['probs']))}"
    assert body["usage"]["prompt_tokens"] == sum(tokens(server, text) for text in inputs)
    _, again = post(server, "/classify", {"input": inputs[0], "use_activation": False})
    logits = again["data"][0]["probs"]
    assert again["data"][0]["label"] == body["data"][0]["label"]
    assert logits.index(max(logits)) == body["data"][0]["probs"].index(
        max(body["data"][0]["probs"])
    )
    assert sum(logits) != pytest.approx(1.0)


def test_cohere_embed_matches_openai_embeddings(server: RunningServer) -> None:
    texts = ["hello there", "general kenobi"]
    request = {
        "model": MODEL,
        "texts": texts,
        "input_type": "search_document",
        "embedding_types": ["float", "binary", "ubinary"],
    }
    status, body = post(server, "/v2/embed", request)
    assert status == 200, body
    _, openai_shape = post(server, "/v1/embeddings", {"input": texts})
    assert body["embeddings"]["float"] == [item["embedding"] for item in openai_shape["data"]]
    for vector, signed, unsigned in zip(
        body["embeddings"]["float"],
        body["embeddings"]["binary"],
        body["embeddings"]["ubinary"],
        strict=True,
    ):
        assert len(unsigned) == 64 // 8
        assert [value - 128 for value in unsigned] == signed
        first_bit = unsigned[0] >> 7
        assert first_bit == (vector[0] >= 0)
    assert body["texts"] == texts
    assert body["meta"]["api_version"] == {"version": "2"}
    assert body["meta"]["tokens"]["input_tokens"] == openai_shape["usage"]["prompt_tokens"]
    status, body = post(server, "/v2/embed", {"texts": texts})
    assert status == 400
    assert body["error"]["param"] == "model"


def test_invocations_dispatch_by_the_bodys_shape(server: RunningServer) -> None:
    status, body = post(server, "/invocations", {"query": QUERY, "documents": DOCUMENTS})
    assert status == 200
    assert body["results"][0]["index"] == 2
    status, body = post(server, "/invocations", {"text_1": "a", "text_2": "a"})
    assert status == 200
    assert body["data"][0]["object"] == "score"
    status, body = post(server, "/invocations", {"input": "a"})
    assert status == 200
    assert body["data"][0]["object"] == "embedding"
    status, body = post(server, "/invocations", {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 200
    assert body["data"][0]["object"] == "embedding"
    status, body = post(server, "/invocations", {"prompt": "hi"})
    assert status == 400
    assert body["error"]["message"] == (
        "Cannot find suitable handler for request. Expected one of: "
        "['EmbeddingRequest', 'RerankRequest', 'ScoreRequest']"
    )


def test_each_pair_is_scheduled_like_a_request(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    """One slot and a 300 ms prefill: two pairs run one after the other, in /load meanwhile."""
    running = llmsim_server(
        "--runner", "pooling", "--max-num-seqs", "1", "--time-to-first-token", "300ms"
    )
    durations: list[float] = []

    def rerank() -> None:
        start = time.monotonic()
        status, _ = post(running, "/rerank", {"query": "q", "documents": ["a", "b"]})
        assert status == 200
        durations.append(time.monotonic() - start)

    worker = threading.Thread(target=rerank)
    worker.start()
    time.sleep(0.1)
    with urllib.request.urlopen(running.base_url + "/load", timeout=10) as response:
        load = json.loads(response.read())["server_load"]
    with urllib.request.urlopen(running.base_url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    worker.join(20)
    assert load == 1
    assert re.search(r"^vllm:num_requests_waiting\{[^}]*\} 1\.0$", metrics, re.MULTILINE)
    assert durations[0] >= 0.55


def test_a_generation_model_has_no_pooling_routes(tmp_path: Any) -> None:
    running = start_server([], tmp_path)
    try:
        for path in (
            "/score",
            "/v1/score",
            "/rerank",
            "/v1/rerank",
            "/v2/rerank",
            "/classify",
            "/v2/embed",
        ):
            status, body = post(running, path, {"query": "a", "documents": ["a"]})
            assert (status, body["error"]["message"]) == (404, f"Not Found: {path}")
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        status, body = post(running, "/invocations", chat)
        assert status == 200
        assert body["object"] == "chat.completion"
    finally:
        running.stop()


def test_openapi_describes_the_pooling_routes(server: RunningServer) -> None:
    with urllib.request.urlopen(server.base_url + "/openapi.json", timeout=10) as response:
        document = json.load(response)
    for path in ("/score", "/v1/score", "/rerank", "/v1/rerank", "/v2/rerank", "/classify"):
        assert "post" in document["paths"][path], path
    rerank = document["paths"]["/v2/rerank"]["post"]["requestBody"]["content"]
    assert rerank["application/json"]["schema"] == {"$ref": "#/components/schemas/RerankRequest"}
    assert "query" in document["components"]["schemas"]["RerankRequest"]["required"]
    assert "/v1/chat/completions" not in document["paths"]  # no generating route here
    assert "/v1/embeddings" in document["paths"]
