"""The ``VllmEngine`` servicer: six RPCs over the server's engines.

``Generate`` submits through :mod:`llmsim.service` and runs the sequences in a task of
their own, so ``Abort`` can end them (their samples finish with ``abort``) while a client
that cancels its call, or whose deadline passes, cancels the handler: leaving the
``with group:`` block aborts the sequences and frees their slots, as an HTTP disconnect does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc

from llmsim.api.grpc import convert
from llmsim.api.grpc.generated import vllm_engine_pb2 as pb
from llmsim.api.grpc.generated import vllm_engine_pb2_grpc as pb_grpc
from llmsim.api.grpc.status import status_code
from llmsim.api.grpc.streaming import ChunkSink
from llmsim.engine import RequestGroup
from llmsim.engine.stream_interval import with_interval
from llmsim.runtime.faults import FORCE_HEADER
from llmsim.runtime.sleep import SleepController
from llmsim.service.embedding import start_embedding
from llmsim.service.errors import ServiceError
from llmsim.service.generation import NOT_SERVING, ServiceState, output_ids, start

SERVER_TYPE = "vllm-grpc"
FORCE_KEY = FORCE_HEADER.lower()
"""A forced injected error status, as HTTP's header."""
RANK_KEY = "x-data-parallel-rank"


class VllmEngineServicer(pb_grpc.VllmEngineServicer):  # type: ignore[misc]
    """vLLM's RPCs under vLLM's method names."""

    def __init__(self, state: ServiceState, sleep: SleepController | None) -> None:
        self.state = state
        self.sleep = sleep
        self.started = time.time()
        self.last_receive = 0.0
        self._live: dict[str, set[asyncio.Future[None]]] = {}
        """Request id -> the tasks running its sequences, for ``Abort``."""

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        self.last_receive = time.time()
        with self.state.load:  # counted in ``GET /load`` until the last message is out
            try:
                metadata = _metadata(context)
                token_request = convert.token_request(request, metadata.get(FORCE_KEY))
                token_request.data_parallel_rank = _rank(metadata)
                group = await start(self.state, token_request)
            except ServiceError as exc:
                await context.abort(status_code(exc), exc.message)
            with group:
                run_id = token_request.request_id
                async for message in self._generate(group, run_id, request.stream):
                    yield message

    async def _generate(
        self, group: RequestGroup, request_id: str, stream: bool
    ) -> AsyncIterator[pb.GenerateResponse]:
        sink = ChunkSink(group) if stream else None
        interval = group.engine.settings.stream_interval
        run = asyncio.ensure_future(
            group.run(None if sink is None else with_interval(sink, interval))
        )
        if sink is not None:
            run.add_done_callback(lambda _: sink.close())
        live = self._live.setdefault(request_id, set())
        live.add(run)
        try:
            if sink is not None:
                while (message := await sink.next()) is not None:
                    yield message
            else:
                await asyncio.wait({run})
            aborted = run.cancelled()
            if not aborted:
                run.result()
            tokenizer = group.engine.tokenizer
            for sequence in group.sequences:
                ids = sink.sent_ids(sequence) if sink else output_ids(sequence, tokenizer)
                yield convert.complete(group, sequence, ids, aborted)
        finally:
            run.cancel()
            live.discard(run)
            if not live:
                self._live.pop(request_id, None)

    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        self.last_receive = time.time()
        request_id = request.request_id or f"embd-{time.monotonic_ns()}"
        with self.state.load:
            try:
                metadata = _metadata(context)
                ids = list(request.tokenized.input_ids)
                forced = metadata.get(FORCE_KEY)
                embedding = start_embedding(self.state, request_id, ids, forced, _rank(metadata))
            except ServiceError as exc:
                await context.abort(status_code(exc), exc.message)
            with embedding.group:
                await embedding.group.run()
        return pb.EmbedResponse(
            embedding=embedding.vector,
            prompt_tokens=embedding.prompt_tokens,
            embedding_dim=len(embedding.vector),
        )

    async def HealthCheck(
        self, request: pb.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> pb.HealthCheckResponse:
        phase = self.state.lifecycle.phase
        if phase == "ready":
            return pb.HealthCheckResponse(healthy=True, message="Health check passed")
        return pb.HealthCheckResponse(healthy=False, message=NOT_SERVING[phase])

    async def Abort(
        self, request: pb.AbortRequest, context: grpc.aio.ServicerContext
    ) -> pb.AbortResponse:
        """End the named requests now: each sample answers ``abort`` with the ids it has."""
        for request_id in request.request_ids:
            for run in list(self._live.get(request_id, ())):
                run.cancel()
        return pb.AbortResponse()

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        engine = self.state.engine
        settings = engine.settings
        return pb.GetModelInfoResponse(
            model_path=settings.model,
            is_generation=True,
            max_context_length=settings.max_model_len,
            vocab_size=min(engine.tokenizer.max_token_id + 1, convert.UINT32_MAX),
            supports_vision=False,
        )

    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetServerInfoResponse:
        state = self.state
        paused = state.paused or (self.sleep is not None and self.sleep.is_sleeping)
        return pb.GetServerInfoResponse(
            active_requests=state.busy,
            is_paused=paused,
            last_receive_timestamp=self.last_receive,
            uptime_seconds=time.time() - self.started,
            server_type=SERVER_TYPE,
        )


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The call's text metadata (keys arrive in lower case)."""
    return {
        key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)
    }


def _rank(metadata: dict[str, str]) -> int | None:
    """The engine a call asks for with ``x-data-parallel-rank`` (HTTP's header); None when
    absent or not a number, as HTTP then balances."""
    try:
        return int(metadata[RANK_KEY])
    except (KeyError, ValueError):
        return None
