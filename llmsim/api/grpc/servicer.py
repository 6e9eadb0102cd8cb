"""The ``VllmEngine`` servicer: six RPCs over the instance's engine.

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
from llmsim.runtime.faults import FORCE_HEADER
from llmsim.runtime.sleep import SleepController
from llmsim.service.embedding import start_embedding
from llmsim.service.errors import ServiceError
from llmsim.service.generation import NOT_SERVING, ServiceState, output_ids, start

SERVER_TYPE = "vllm-grpc"
FORCE_KEY = FORCE_HEADER.lower()


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
        try:
            token_request = convert.token_request(request, _forced(context))
            group = start(self.state, token_request)
        except ServiceError as exc:
            await context.abort(status_code(exc), exc.message)
        with group:
            run_id = token_request.request_id
            async for message in self._generate(group, run_id, request.stream):
                yield message

    async def _generate(
        self, group: RequestGroup, request_id: str, stream: bool
    ) -> AsyncIterator[pb.GenerateResponse]:
        sink = ChunkSink(group, self.state.engine.tokenizer) if stream else None
        run = asyncio.ensure_future(group.run(sink))
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
            tokenizer = self.state.engine.tokenizer
            for sequence in group.sequences:
                ids = output_ids(sequence, tokenizer)
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
        try:
            embedding = start_embedding(
                self.state, request_id, list(request.tokenized.input_ids), _forced(context)
            )
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
        scheduler = self.state.engine.scheduler
        paused = scheduler.paused or (self.sleep is not None and self.sleep.is_sleeping)
        return pb.GetServerInfoResponse(
            active_requests=scheduler.num_running + scheduler.num_waiting,
            is_paused=paused,
            last_receive_timestamp=self.last_receive,
            uptime_seconds=time.time() - self.started,
            server_type=SERVER_TYPE,
        )


def _forced(context: grpc.aio.ServicerContext) -> str | None:
    """A forced injected error, sent as ``x-return-error`` metadata (HTTP's header)."""
    for key, value in context.invocation_metadata() or ():
        if key == FORCE_KEY:
            return value if isinstance(value, str) else value.decode()
    return None
