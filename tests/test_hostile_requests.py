"""Requests a hostile or careless client sends, against a real ``llmsim serve``: heavy but
legitimate answers are made in pieces while the server keeps answering others, work above
``--max-request-work`` is refused up front, and compressed bodies are inflated under the body
limit (:mod:`test_hostile_input` has the malformed input).
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RunningServer, start_server
from hostile import (
    CHAT,
    COMPLETIONS,
    HI,
    MESSAGES,
    MODEL,
    RESPONSIVE,
    WORK_LIMIT,
    Reply,
    Watch,
    assert_anthropic_error,
    assert_error,
    call,
    hostile_server,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = hostile_server(tmp_path_factory.mktemp("hostile"))
    yield running
    running.stop()


# -- 1. heavy answers are made in pieces while the server stays responsive ----------


def test_a_heavy_logprobs_answer_streams_its_body_and_the_loop_stays_free(
    server: RunningServer,
) -> None:
    body = {
        "model": MODEL,
        "messages": HI,
        "n": 16,
        "max_tokens": 700,
        "ignore_eos": True,
        "logprobs": True,
        "top_logprobs": 20,
    }
    with Watch(server) as watch:
        time.sleep(0.05)
        reply = call(server, CHAT, body, timeout=60)
    watch.assert_responsive()
    assert reply.status == 200, reply.body[:300]
    assert reply.headers.get("transfer-encoding") == "chunked"
    answer = reply.json()
    assert len(answer["choices"]) == 16
    for choice in answer["choices"]:
        content = choice["logprobs"]["content"]
        assert len(content) == 700 == answer["usage"]["completion_tokens"] // 16
        assert all(len(entry["top_logprobs"]) == 20 for entry in content)
        assert "".join(entry["token"] for entry in content) == choice["message"]["content"]


def test_a_heavy_logprobs_stream_leaves_room_for_other_requests(server: RunningServer) -> None:
    """Zero-latency tokens with 20 logprobs each are released a few per choice and tick."""
    body = {
        "model": MODEL,
        "messages": HI,
        "n": 16,
        "max_tokens": 400,
        "ignore_eos": True,
        "logprobs": True,
        "top_logprobs": 20,
        "stream": True,
    }
    with Watch(server) as watch:
        reply = call(server, CHAT, body, timeout=60)
    watch.assert_responsive()
    assert reply.status == 200
    events = [event for event in reply.body.split(b"\n\n") if event]
    assert events[-1] == b"data: [DONE]"
    tokens: dict[int, int] = {}
    for event in events[:-1]:
        choice = json.loads(event.removeprefix(b"data: "))["choices"][0]
        if choice["logprobs"] is not None:
            assert len(choice["logprobs"]["content"][0]["top_logprobs"]) == 20
            tokens[choice["index"]] = tokens.get(choice["index"], 0) + 1
    assert tokens == dict.fromkeys(range(16), 400)


def test_echo_with_prompt_logprobs_of_a_long_prompt_keeps_the_loop_free(
    server: RunningServer,
) -> None:
    prompt = "the quick brown fox jumps over the lazy dog " * 300  # about 2 700 tokens
    body = {
        "model": MODEL,
        "prompt": prompt,
        "echo": True,
        "logprobs": 20,
        "prompt_logprobs": 20,
        "max_tokens": 5,
        "n": 2,
    }
    with Watch(server) as watch:
        reply = call(server, COMPLETIONS, body, timeout=60)
    watch.assert_responsive()
    assert reply.status == 200, reply.body[:300]
    answer = reply.json()
    prompt_tokens = answer["usage"]["prompt_tokens"]
    for choice in answer["choices"]:
        assert choice["text"].startswith(prompt)
        assert len(choice["prompt_logprobs"]) == prompt_tokens
        assert choice["prompt_logprobs"][0] is None
        logprobs = choice["logprobs"]
        assert len(logprobs["tokens"]) == len(logprobs["top_logprobs"]) == prompt_tokens + 5
        assert logprobs["text_offset"][0] == 0


def test_a_streamed_echo_of_a_long_prompt_with_logprobs_keeps_the_loop_free(
    server: RunningServer,
) -> None:
    """The echoed prompt's logprobs are made before the stream starts, not in one go when
    the first token comes out."""
    prompt = "the quick brown fox jumps over the lazy dog " * 300
    body = {
        "model": MODEL,
        "prompt": prompt,
        "echo": True,
        "logprobs": 20,
        "max_tokens": 3,
        "n": 4,
        "stream": True,
    }
    with Watch(server) as watch:
        reply = call(server, COMPLETIONS, body, timeout=60)
    watch.assert_responsive()
    assert reply.status == 200
    events = [event for event in reply.body.split(b"\n\n") if event]
    assert events[-1] == b"data: [DONE]"
    firsts: dict[int, dict[str, Any]] = {}
    for event in events[:-1]:
        choice = json.loads(event.removeprefix(b"data: "))["choices"][0]
        firsts.setdefault(choice["index"], choice)
    assert sorted(firsts) == [0, 1, 2, 3]
    for choice in firsts.values():
        assert choice["text"].startswith(prompt)
        logprobs = choice["logprobs"]
        assert len(logprobs["tokens"]) == len(logprobs["top_logprobs"]) > 2000
        assert logprobs["token_logprobs"][0] is None
        assert all(len(top) >= 20 for top in logprobs["top_logprobs"][1:])


def test_a_thousand_prompts_with_long_answers_keep_the_loop_free(server: RunningServer) -> None:
    """A large body is parsed and its prompts counted in a worker thread, the answers made
    there too, and the answer written in pieces."""
    body = {
        "model": MODEL,
        "prompt": [[7 + i % 50] * 100 for i in range(1024)],
        "max_tokens": 900,
        "ignore_eos": True,
    }
    with Watch(server) as watch:
        reply = call(server, COMPLETIONS, body, timeout=60)
    watch.assert_responsive()
    assert reply.status == 200, reply.body[:300]
    answer = reply.json()
    assert len(answer["choices"]) == 1024
    assert answer["usage"] == {
        "prompt_tokens": 102_400,
        "completion_tokens": 921_600,
        "total_tokens": 1_024_000,
    }


# -- 2. bounded work per request ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "param", "message"),
    [
        (
            CHAT,
            {"messages": HI, "logprobs": True, "top_logprobs": 21},
            "logprobs",
            "Requested sample logprobs of 21, which is greater than max allowed: 20 "
            "(parameter=logprobs, value=21)",
        ),
        (
            COMPLETIONS,
            {"prompt": "hi", "logprobs": 21},
            "logprobs",
            "Requested sample logprobs of 21, which is greater than max allowed: 20 "
            "(parameter=logprobs, value=21)",
        ),
        (
            COMPLETIONS,
            {"prompt": "hi", "prompt_logprobs": 21},
            "prompt_logprobs",
            "Requested prompt logprobs of 21, which is greater than max allowed: 20 "
            "(parameter=prompt_logprobs, value=21)",
        ),
    ],
)
def test_more_logprobs_than_max_logprobs_is_refused_as_vllm_does(
    server: RunningServer, path: str, body: dict[str, Any], param: str, message: str
) -> None:
    error = assert_error(call(server, path, {"model": MODEL, **body}), 400)
    assert error["message"] == message
    assert error["param"] == param


@pytest.mark.parametrize(
    "body",
    [
        # n x max_tokens x (1 + top_logprobs): 128 x 3000 x 21, about 8 million
        {"messages": HI, "n": 128, "max_tokens": 3000, "logprobs": True, "top_logprobs": 20},
        # no max_tokens: each choice may run to the end of the context
        {"messages": HI, "n": 64, "logprobs": True, "top_logprobs": 5},
        # many prompts count too
        {"prompt": ["hi"] * 1024, "max_tokens": 1000, "logprobs": 1},
        # prompt tokens scored for echo and prompt logprobs count too
        {"prompt": "word " * 3000, "n": 32, "echo": True, "logprobs": 20, "max_tokens": 1},
    ],
)
def test_work_above_the_budget_is_a_quick_400_naming_the_limit(
    server: RunningServer, body: dict[str, Any]
) -> None:
    path = CHAT if "messages" in body else COMPLETIONS
    reply = call(server, path, {"model": MODEL, **body})
    error = assert_error(reply, 400)
    assert "--max-request-work" in error["message"]
    assert str(WORK_LIMIT) in error["message"]
    assert reply.seconds < RESPONSIVE


def test_work_counts_choices_tokens_logprobs_and_scored_prompts() -> None:
    from llmsim.api.openai.budget import request_work
    from llmsim.api.openai.logprobs import OutputPlan
    from llmsim.engine import PromptInput
    from llmsim.engine.tokenizer import BuiltinTokenizer

    prompts = [PromptInput(100, "a"), PromptInput(4000, "b")]
    # max_tokens capped by the room each prompt leaves: 300 and 96 tokens
    assert request_work(prompts, 2, 300, 4096, None) == 2 * (300 + 96)
    # unset max_tokens: the whole room
    assert request_work(prompts[:1], 1, None, 4096, None) == 3996
    plan = OutputPlan(BuiltinTokenizer(), seed=1, temperature=None, logprobs=5, echo=True)
    # each generated and each echoed prompt token counted with its 5 alternatives
    assert request_work(prompts[:1], 3, 10, 4096, plan) == 3 * (10 * 6 + 100 * 6)
    plan.prompt_logprobs = 2
    assert request_work(prompts[:1], 1, 10, 4096, plan) == 10 * 6 + 100 * (6 + 3)


def test_work_within_the_budget_is_served(server: RunningServer) -> None:
    body = {"model": MODEL, "prompt": ["hi"] * 64, "max_tokens": 4, "logprobs": 2}
    reply = call(server, COMPLETIONS, body)
    assert reply.status == 200
    assert len(reply.json()["choices"]) == 64


def test_prompt_plus_max_tokens_beyond_max_model_len_is_400(server: RunningServer) -> None:
    error = assert_error(call(server, CHAT, {"messages": HI, "max_tokens": 4096}), 400)
    assert "maximum context length is 4096 tokens" in error["message"]
    assert error["param"] == "max_tokens"


# -- 3. compressed bodies --------------------------------------------------------------


def _gzip(data: bytes, wbits: int = 31) -> bytes:
    packer = zlib.compressobj(1, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """About 64 KB of gzip that inflates to 64 MiB, 64 times the server's body limit."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    parts = [packer.compress(b'{"messages": [{"role": "user", "content": "')]
    zeros = b"0" * (1 << 20)
    parts.extend(packer.compress(zeros) for _ in range(64))
    parts.append(packer.compress(b'"}]}') + packer.flush())
    return b"".join(parts)


def test_a_compression_bomb_gets_413_at_once_and_stops_inflating(
    server: RunningServer, bomb: bytes
) -> None:
    replies: list[Reply] = []

    def send() -> None:
        replies.append(call(server, CHAT, bomb, {"Content-Encoding": "gzip"}))

    with Watch(server) as watch:
        senders = [threading.Thread(target=send) for _ in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
    watch.assert_responsive()
    assert len(replies) == 4
    for reply in replies:
        error = assert_error(reply, 413)
        assert "once decompressed" in error["message"]
        assert reply.seconds < RESPONSIVE


@pytest.mark.parametrize(
    ("encoding", "wbits"), [("gzip", 31), ("x-gzip", 31), ("deflate", 15), ("deflate", -15)]
)
def test_gzip_and_deflate_bodies_are_read(server: RunningServer, encoding: str, wbits: int) -> None:
    body = json.dumps({"model": MODEL, "messages": HI, "max_tokens": 2}).encode()
    reply = call(server, CHAT, _gzip(body, wbits), {"Content-Encoding": encoding})
    assert reply.status == 200, reply.body[:300]
    assert reply.json()["object"] == "chat.completion"


PLAIN = json.dumps({"model": MODEL, "messages": HI, "max_tokens": 2}).encode()


@pytest.mark.parametrize(
    ("encoding", "data", "status"),
    [
        ("gzip", PLAIN, 400),  # says gzip, is not
        ("deflate", PLAIN, 400),
        ("gzip", _gzip(PLAIN)[:-12], 400),  # cut short
        ("br", PLAIN, 415),
        ("zstd", PLAIN, 415),
        ("garbage", PLAIN, 415),
        ("gzip, gzip", _gzip(_gzip(PLAIN)), 415),
    ],
)
def test_wrong_or_unknown_content_encodings_get_a_json_error(
    server: RunningServer, encoding: str, data: bytes, status: int
) -> None:
    error = assert_error(call(server, CHAT, data, {"Content-Encoding": encoding}), status)
    assert "encoding" in error["message"].lower() or encoding in error["message"]


def test_encoding_errors_on_the_messages_api_come_in_anthropic_shape(
    server: RunningServer,
) -> None:
    assert_anthropic_error(call(server, MESSAGES, PLAIN, {"Content-Encoding": "br"}), 415)


def test_the_server_is_still_healthy_afterwards(server: RunningServer) -> None:
    assert call(server, "/health", method="GET").status == 200
    assert "Traceback" not in server.log()


def test_megabytes_to_tokenize_keep_the_loop_free(server: RunningServer) -> None:
    """A large /tokenize body is tokenized in a worker thread, a slice at a time."""
    text = "hello world, this is text. " * 36_000  # just under the 1 MiB body limit
    with Watch(server) as watch:
        reply = call(server, "/tokenize", {"model": MODEL, "prompt": text}, timeout=60)
    watch.assert_responsive()
    assert reply.status == 200, reply.body[:300]
    assert reply.json()["count"] == 7 * 36_000 + 1  # seven tokens a sentence, and the BOS


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_a_thousand_embeddings_are_made_off_the_loop(server: RunningServer, encoding: str) -> None:
    """1024 vectors of 4096 floats (17 MB of JSON) are made and encoded in a worker thread."""
    body = {"model": MODEL, "input": ["a few words"] * 1024, "encoding_format": encoding}
    with Watch(server) as watch:
        reply = call(server, "/v1/embeddings", body, timeout=60)
    watch.assert_responsive()
    assert reply.status == 200, reply.body[:300]
    data = reply.json()["data"]
    assert [item["index"] for item in data] == list(range(1024))
    assert data[0]["embedding"] == data[-1]["embedding"]


@pytest.fixture(scope="module")
def pooling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(["--runner", "pooling"], tmp_path_factory.mktemp("pooling"))
    yield running
    running.stop()


def test_a_thousand_cohere_embeddings_of_every_type_are_made_off_the_loop(
    pooling: RunningServer,
) -> None:
    types = ["float", "binary", "ubinary", "base64"]
    body = {"model": MODEL, "texts": ["a few words"] * 1024, "embedding_types": types}
    with Watch(pooling, chat=False) as watch:
        reply = call(pooling, "/v2/embed", body, timeout=60)
    watch.assert_responsive()
    assert reply.status == 200, reply.body[:300]
    assert {
        kind: len(vectors) for kind, vectors in reply.json()["embeddings"].items()
    } == dict.fromkeys(types, 1024)


def _binary_tree(levels: int) -> dict[str, Any]:
    """An array of two of the level below, ``levels`` deep: 2**levels integers of JSON."""
    defs: dict[str, Any] = {"d0": {"type": "integer", "minimum": 0, "maximum": 9}}
    for level in range(1, levels + 1):
        ref = {"$ref": f"#/$defs/d{level - 1}"}
        defs[f"d{level}"] = {"type": "array", "prefixItems": [ref, ref], "minItems": 2}
    tree = {"$defs": defs, "$ref": f"#/$defs/d{levels}"}
    return {"type": "json_schema", "json_schema": {"name": "tree", "schema": tree}}


def test_every_choice_of_a_long_structured_answer_counts_as_work(server: RunningServer) -> None:
    """Each choice tokenizes its whole answer before max_tokens cuts it: counted, not hung."""
    body = {"model": MODEL, "prompt": ["x"] * 1024, "max_tokens": 5}
    with Watch(server) as watch:
        reply = call(server, COMPLETIONS, {**body, "response_format": _binary_tree(12)})
    watch.assert_responsive()
    error = assert_error(reply, 400)
    assert "structured answers" in error["message"]
    assert "--max-request-work" in error["message"]


def test_many_choices_of_a_long_structured_answer_are_made_off_the_loop(
    server: RunningServer,
) -> None:
    body = {"model": MODEL, "messages": HI, "max_tokens": 5, "n": 48}
    with Watch(server) as watch:
        reply = call(server, CHAT, {**body, "response_format": _binary_tree(12)})
    watch.assert_responsive()
    assert reply.status == 200, reply.body[:300]
    assert len(reply.json()["choices"]) == 48
