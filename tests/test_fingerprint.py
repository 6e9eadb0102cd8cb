"""vLLM's ``system_fingerprint``: on chat and completion answers and on a stream's end, in
each ``--fingerprint-mode``; nowhere else."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import openai
import pytest
from conftest import RunningServer, post_json, stream_events

from llmsim.api.openai.fingerprint import system_fingerprint
from llmsim.settings.model import Settings
from llmsim.settings.vllm_flags import VLLM_VERSION

FULL = re.compile(rf"vllm-{re.escape(VLLM_VERSION)}-[0-9a-f]{{8}}")
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
COMPLETION = {"prompt": "Hi", "max_tokens": 4}


def test_answers_and_stream_ends_carry_the_fingerprint(shared_server: RunningServer) -> None:
    _, chat = post_json(shared_server, "/v1/chat/completions", CHAT)
    _, completion = post_json(shared_server, "/v1/completions", COMPLETION)
    fingerprint = chat["system_fingerprint"]
    assert FULL.fullmatch(fingerprint)
    assert completion["system_fingerprint"] == fingerprint
    _, pieces = post_json(shared_server, "/v1/completions", {**COMPLETION, "logprobs": 2})
    assert pieces["system_fingerprint"] == fingerprint  # the answer written in pieces

    for path, body in (("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)):
        # Without usage: each choice's last chunk (the one with its finish reason).
        streamed = stream_events(shared_server, path, {**body, "n": 2})
        stamped = [c for c in streamed if "system_fingerprint" in c]
        finished = [c for c in streamed if c["choices"][0]["finish_reason"] is not None]
        assert stamped == finished
        assert len(stamped) == 2
        assert {c["system_fingerprint"] for c in stamped} == {fingerprint}
        # With usage: the usage chunk alone.
        usage = stream_events(
            shared_server, path, {**body, "stream_options": {"include_usage": True}}
        )
        assert [c.get("system_fingerprint") for c in usage] == [None] * (len(usage) - 1) + [
            fingerprint
        ]
        assert usage[-1]["choices"] == []

    # The translated APIs have no such field.
    _, response = post_json(shared_server, "/v1/responses", {"input": "Hi", "max_output_tokens": 4})
    assert "system_fingerprint" not in response
    client = openai.OpenAI(base_url=shared_server.base_url + "/v1", api_key="x")
    sdk = client.chat.completions.create(model=chat["model"], messages=CHAT["messages"])
    assert sdk.system_fingerprint == fingerprint


def test_modes_none_and_custom(llmsim_server: Callable[..., RunningServer]) -> None:
    for args, expected in (
        (["--fingerprint-mode", "none"], None),
        (["--fingerprint-mode", "custom", "--fingerprint-value", "build-7"], "build-7"),
    ):
        running = llmsim_server(*args)
        _, chat = post_json(running, "/v1/chat/completions", CHAT)
        assert chat["system_fingerprint"] == expected
        streamed = stream_events(running, "/v1/chat/completions", CHAT)
        assert [c.get("system_fingerprint") for c in streamed if "system_fingerprint" in c] == (
            [] if expected is None else [expected]
        )


@pytest.mark.parametrize(
    ("fields", "pattern"),
    [
        ({}, rf"vllm-{VLLM_VERSION}-[0-9a-f]{{8}}"),
        ({"data_parallel_size": 4}, rf"vllm-{VLLM_VERSION}-dp4-[0-9a-f]{{8}}"),
        (
            {"data_parallel_size": 4, "fingerprint_mode": "hash"},
            rf"vllm-{VLLM_VERSION}-[0-9a-f]{{8}}",
        ),
        ({"fingerprint_mode": "custom"}, None),
    ],
)
def test_fingerprint_shapes(fields: dict[str, Any], pattern: str | None) -> None:
    fingerprint = system_fingerprint(Settings(**fields))
    if pattern is None:
        assert fingerprint is None  # custom without a value: none, as in vLLM
    else:
        assert fingerprint is not None
        assert re.fullmatch(pattern.replace(".", r"\."), fingerprint)


def test_the_hash_follows_the_configuration() -> None:
    base = system_fingerprint(Settings())
    assert system_fingerprint(Settings()) == base
    assert system_fingerprint(Settings(max_model_len=8192)) != base
    assert system_fingerprint(Settings(seed=3)) == base  # not part of the configuration hash
