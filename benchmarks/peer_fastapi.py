"""A peer: the chat endpoint as FastAPI simulators write it, for the same-run comparison.

FastAPI on uvicorn (uvloop, httptools, no access log) with pydantic models for the request
and the response, answering with a captured llmsim body (a fresh id and time each time,
through the response model) and streaming the captured SSE writes. It does no more than a
simulator must, so its rate is an upper bound of that way of writing one.

    python benchmarks/peer_fastapi.py --port 8002 --payload payload.json

``payload.json`` is the ceiling app's (:mod:`ceiling_app`). Needs the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

try:
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
except ImportError:  # pragma: no cover - a one-line hint instead of a traceback
    raise SystemExit(
        "the FastAPI peer needs the bench extra: pip install 'llmsim[bench]'"
    ) from None
from pydantic import BaseModel, Field


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | None = None


class ChatRequest(BaseModel):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    ignore_eos: bool = False


class AnswerMessage(BaseModel):
    role: str
    content: str | None = None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)


class Choice(BaseModel):
    index: int
    message: AnswerMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatResponse(BaseModel):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    prompt_logprobs: list[Any] | None = None


def build_app(body: dict[str, Any], writes: list[bytes]) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: ChatRequest) -> ChatResponse | StreamingResponse:
        if request.stream:
            return StreamingResponse(stream(), media_type="text/event-stream")
        answer = {**body, "id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time())}
        return ChatResponse.model_validate(answer)

    async def stream() -> AsyncIterator[bytes]:
        for data in writes:
            yield data

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--payload", type=Path, required=True, help="JSON: body and writes")
    args = parser.parse_args()
    payload = json.loads(args.payload.read_text(encoding="utf-8"))
    app = build_app(json.loads(payload["body"]), [item.encode() for item in payload["writes"]])
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
