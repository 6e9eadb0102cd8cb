"""An open stream keeps no parsed request: with thousands of streams open, every body kept
costs its kilobytes each (the benchmarks' scenario (g) measures the whole per-stream cost)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from llmsim.api.anthropic.convert import MessagesRequest
from llmsim.api.http.app import create_app
from llmsim.api.openai.schemas import ChatCompletionRequest, CompletionRequest
from llmsim.api.openai.token_generate import GenerateRequest
from llmsim.api.responses.routes import ResponsesRequest
from llmsim.settings.model import Settings

MESSAGES = [{"role": "user", "content": "Hello there, friend."}]


@pytest.mark.parametrize(
    ("path", "body", "parsed"),
    [
        ("/v1/chat/completions", {"messages": MESSAGES, "stream": True}, ChatCompletionRequest),
        ("/v1/completions", {"prompt": "Hello there", "stream": True}, CompletionRequest),
        ("/v1/responses", {"input": "Hello there", "stream": True}, ResponsesRequest),
        ("/v1/messages", {"messages": MESSAGES, "max_tokens": 20, "stream": True}, MessagesRequest),
        (
            "/inference/v1/generate",
            {"token_ids": [1, 2, 3], "sampling_params": {"max_tokens": 20}, "stream": True},
            GenerateRequest,
        ),
    ],
)
async def test_an_open_stream_keeps_no_parsed_request(
    aiohttp_client: Callable[..., Any], path: str, body: dict[str, Any], parsed: type[BaseModel]
) -> None:
    settings = Settings(inter_token_latency=0.05, time_to_first_token=0.0, config=None)
    client = await aiohttp_client(create_app(settings))
    body = {"model": "llmsim/sim-model", "max_tokens": 20, **body}
    async with client.post(path, json=body) as response:
        assert response.status == 200
        await response.content.readline()  # the stream is open and running
        gc.collect()
        kept = [item for item in gc.get_objects() if isinstance(item, (parsed, *REQUESTS))]
        assert kept == []
        async for _ in response.content:
            pass


REQUESTS = (ChatCompletionRequest, CompletionRequest, ResponsesRequest, MessagesRequest)
