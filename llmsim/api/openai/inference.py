"""The two generation endpoints: parse, resolve, submit to the engine, write JSON or SSE.

No scheduling happens here: the engine decides when tokens are released, these
handlers only translate between the wire and the engine. The steps every door shares
(readiness, injected faults, the model or adapter, prompt counting, tool and structured-output
answers, the answer sources, the sampling parameters and the engine's request, the
``kv_transfer_params`` steps, the engine's admission and its refusals) are
:mod:`llmsim.service`'s; their errors reach the client through the guard in vLLM's shape.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web

from llmsim.answers import Responder
from llmsim.answers.view import Api
from llmsim.api.http.errors import APIError
from llmsim.api.http.jsonio import dumps
from llmsim.api.http.keys import GENERATION, STREAMED
from llmsim.api.http.requests import is_large, parse_body
from llmsim.api.http.routing import engine_index
from llmsim.api.http.sse import (
    CuttingSink,
    ResponseMeta,
    StreamCutError,
    StreamSink,
    open_stream,
)
from llmsim.api.http.sse_keep_alive import KeepAliveSink
from llmsim.api.openai.answer_pieces import (
    Pieces,
    chat_pieces,
    completion_pieces,
    write_pieces,
)
from llmsim.api.openai.budget import check_answer_work, check_work
from llmsim.api.openai.chat import ChatStreamSink, chat_body
from llmsim.api.openai.chosen import choose
from llmsim.api.openai.completions import CompletionStreamSink, completion_body
from llmsim.api.openai.constrained import (
    chat_answer,
    completion_answer,
    has_constraints,
    renamed,
    request_rng,
    same_name,
)
from llmsim.api.openai.logprobs import OutputPlan, chat_plan, completion_plan
from llmsim.api.openai.parser_flags import check_tool_choice, reasoning_of
from llmsim.api.openai.plain_chat import plain_chat_decoder
from llmsim.api.openai.prompts import apply_server_options, chat_prompt, completion_prompts
from llmsim.api.openai.rendered import rendered_answer, rendered_thinking
from llmsim.api.openai.request_log import RequestLogger
from llmsim.api.openai.request_metrics import request_metrics, streamed_metrics
from llmsim.api.openai.schemas import ChatCompletionRequest, CompletionRequest
from llmsim.engine import (
    Answer,
    ContextLengthError,
    Engine,
    GenerationRequest,
    PromptInput,
    RequestGroup,
    TokenSink,
)
from llmsim.engine.data_parallel import DataParallelEngines
from llmsim.engine.generation import GeneratedText
from llmsim.engine.stream_interval import with_interval
from llmsim.engine.tokenizer import Tokenizer
from llmsim.runtime.adjustable import Runtime
from llmsim.runtime.faults import FORCE_HEADER
from llmsim.runtime.lifecycle import Lifecycle
from llmsim.service.errors import ServiceError
from llmsim.service.generation import (
    check_serving,
    context_error,
    inject_fault,
    resolve,
    submit,
)
from llmsim.service.kv_transfer import KVTransferAgent
from llmsim.service.sampling import generation_request

REQUEST_ID_HEADER = "X-Request-Id"
OFF_LOOP_TOKENS = 32_768
"""Requests with several choices that may generate more tokens than this in all (n x prompts
x max_tokens) have their answers made in a worker thread and written in pieces; a single
choice, at most one context's worth, is made on the loop as before."""
OFF_LOOP_CHARS = 8_192
"""Likewise for the characters of a chosen answer (a structured output, tool calls) that
every choice tokenizes before ``max_tokens`` cuts it, one choice or many: tokenizing this
many takes the loop about 3 ms."""
STREAM_FAILED = "Internal server error while streaming the answer"
LIMIT_NAMES = "'max_tokens' or 'max_completion_tokens'"
"""The fields a context-length error names: chat and completions take either."""
logger = logging.getLogger("llmsim.api")


@dataclass(frozen=True, slots=True)
class InferenceState:
    """What the generation handlers read on every request, gathered under one app key."""

    engine: Engine
    lifecycle: Lifecycle
    runtime: Runtime
    responder: Responder
    kv_agent: KVTransferAgent
    engines: DataParallelEngines | None = None
    """Every engine when the server has more than one; None spares one engine the choice."""
    kv_agents: tuple[KVTransferAgent, ...] = ()
    request_log: RequestLogger | None = None
    """vLLM's request log (``--log-requests``); None when off."""
    fingerprint: str | None = None
    """The ``system_fingerprint`` of chat and completion answers (``--fingerprint-mode``)."""
    fingerprint_tail: bytes = b""
    """The end of a stream's last chunks when they carry it (:func:`fingerprint_tail`)."""


INFERENCE = web.AppKey("inference", InferenceState)

FEATURE_FIELDS = frozenset(
    {
        "tools",
        "tool_choice",
        "response_format",
        "structured_outputs",
        "guided_json",
        "guided_regex",
        "guided_choice",
        "guided_grammar",
        "logprobs",
        "top_logprobs",
        "prompt_logprobs",
        "echo",
        "kv_transfer_params",
    }
)
"""Request fields that ask for more than text: a request that sends none of them (and
most do not) skips the tool, structured-output, logprobs and P/D steps altogether."""


@dataclass(frozen=True)
class Flavor:
    """What differs between chat and text completions."""

    id_prefix: str
    object: str
    chunk_object: str
    prompt_param: str
    body: Callable[[ResponseMeta, RequestGroup], dict[str, Any]]
    sink: Callable[[web.BaseRequest, web.StreamResponse, ResponseMeta], StreamSink]
    prompts: Callable[[Any, Tokenizer, bool], Sequence[PromptInput]]
    plan: Callable[[Any, Tokenizer, int], OutputPlan | None]
    api: Api | None = None
    """The API the client called, when not chat or completions (rules match on it)."""
    pieces: Pieces | None = None
    """The JSON answer made in pieces (:mod:`answer_pieces`); None: always made at once."""
    rename_param: Callable[[str], str] = same_name
    """A chat field's name as the client's API spells it, for errors on translated requests."""


CHAT = Flavor(
    "chatcmpl-",
    "chat.completion",
    "chat.completion.chunk",
    "messages",
    chat_body,
    ChatStreamSink,
    lambda body, tokenizer, with_ids: [chat_prompt(body, tokenizer, with_ids)],
    chat_plan,
    pieces=chat_pieces,
)
COMPLETION = Flavor(
    "cmpl-",
    "text_completion",
    "text_completion",
    "prompt",
    completion_body,
    CompletionStreamSink,
    completion_prompts,
    completion_plan,
    pieces=completion_pieces,
)


PLAIN_CHAT = plain_chat_decoder()
"""The common chat body decoded in C (:mod:`plain_chat`); None without msgspec."""
DECODED = "llmsim.decoded_chat"
"""The fast lane's request key (:func:`create_decoded_chat_completion`): the body decoded
already, and its arrival time."""


@dataclass(frozen=True, slots=True)
class FastChat:
    """What the server's fast lane (:mod:`llmsim.server.fast_lane`) needs to answer a plain
    chat request without aiohttp's request machinery."""

    app: web.Application
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    """:func:`create_decoded_chat_completion` behind the route's own guard."""
    decode: Callable[[bytes], ChatCompletionRequest | None]
    limit: int
    """The largest body it takes (larger ones are read and parsed the usual way)."""


FAST_CHAT = web.AppKey("fast_chat", FastChat)
"""Set when the chat route is the plain one (no upstream, a generation model) and msgspec
is installed."""


async def create_chat_completion(request: web.Request) -> web.StreamResponse:
    # The parsed body is not kept in this frame (no local names it): _generate lets go of
    # it once the engine has the request, which matters with thousands of open streams
    # (2-3 KB each, benchmarks' scenario (g)). The arrival
    # is stamped before the body is read, parsed and tokenized: that is where a client's
    # clock starts, so the latency metrics count that work too.
    arrival = time.monotonic()
    return await _generate(
        request, CHAT, await parse_body(request, ChatCompletionRequest, PLAIN_CHAT), arrival=arrival
    )


def create_decoded_chat_completion(
    request: web.Request,
) -> Coroutine[Any, Any, web.StreamResponse]:
    """The fast lane's chat: the body was read, checked and decoded as a plain chat request
    already (:func:`create_chat_completion` does the same steps for every other body). It
    hands back the generation itself to be awaited, one frame fewer on the way."""
    body, arrival = request.pop(DECODED)  # not kept while the answer waits
    return _generate(request, CHAT, body, arrival=arrival)


async def create_completion(request: web.Request) -> web.StreamResponse:
    arrival = time.monotonic()
    return await _generate(
        request, COMPLETION, await parse_body(request, CompletionRequest), arrival=arrival
    )


def generate(
    request: web.Request,
    flavor: Flavor,
    body: ChatCompletionRequest | CompletionRequest,
    request_id: str | None = None,
    arrival: float | None = None,
) -> Coroutine[Any, Any, web.StreamResponse]:
    """Run a parsed request through the engine and answer it in ``flavor``'s shapes (await
    what it returns: no frame of its own holds ``body`` while a stream runs).

    The Responses and Messages APIs call this with a translated chat request and a
    flavor of their own, so they share every limit, metric and fault of chat;
    ``request_id`` is one the body named (the ``X-Request-Id`` header still wins);
    ``arrival`` is ``time.monotonic()`` when the handler started (None: now).
    """
    return _generate(request, flavor, body, request_id, arrival)


async def _generate(
    request: web.Request,
    flavor: Flavor,
    body: ChatCompletionRequest | CompletionRequest,
    body_id: str | None = None,
    arrival: float | None = None,
) -> web.StreamResponse:
    state = request.app[INFERENCE]  # one lookup: each walks aiohttp's app chain
    engine, kv_agent = state.engine, state.kv_agent  # the engines differ only in their load
    if state.lifecycle.phase != "ready":  # one test on the way of every request
        check_serving(state.lifecycle)
    forced = request.headers.get(FORCE_HEADER)
    if forced is not None or state.runtime.faults.injects:
        model = body.model or engine.settings.served_names[0]
        inject_fault(state.runtime, forced, model, FORCE_HEADER)
    client_id = request.headers.get(REQUEST_ID_HEADER)
    if client_id is not None and not (client_id.isascii() and client_id.isprintable()):
        raise APIError(400, f"{REQUEST_ID_HEADER} must be printable ASCII text.", REQUEST_ID_HEADER)
    request_id = flavor.id_prefix + (client_id or body_id or f"{random.getrandbits(128):032x}")
    target = resolve(engine, body.model)
    settings = engine.settings
    if isinstance(body, ChatCompletionRequest):
        apply_server_options(body, settings)
    # One set test tells a plain request, which skips every feature check below.
    plain = body.__pydantic_fields_set__.isdisjoint(FEATURE_FIELDS)
    transfer = None
    if not plain and body.kv_transfer_params is not None:
        transfer = kv_agent.read(body.kv_transfer_params)
    large = is_large(request)
    if large:  # thousands of prompts: counted in a worker thread, the loop stays free
        prompts = await asyncio.to_thread(
            flavor.prompts, body, engine.tokenizer, engine.needs_token_ids
        )
    else:
        prompts = flavor.prompts(body, engine.tokenizer, engine.needs_token_ids)
    # Tools and schemas are checked even when a rule answers.
    constrained = rendered_answer(body)  # the calls a rendered chat request made
    if not plain:
        if flavor.api != "responses" and isinstance(body, ChatCompletionRequest):
            check_tool_choice(engine.settings, body)  # vLLM's Responses API does not check
        if constrained is None:
            constrained = await _answer(body, engine, flavor)
    sampling = body.sampling()
    if state.responder.active:
        chosen = await choose(state.responder, body, target, engine.settings.mode, flavor.api)
        answer, max_tokens, timing = chosen.answer or constrained, chosen.max_tokens, chosen.timing
    else:
        answer, max_tokens, timing = constrained, sampling.max_tokens, None
    generation = generation_request(
        request_id,
        target,
        prompts,
        sampling,
        max_tokens,
        answer,
        timing,
        kv_agent.decode_delay(transfer, engine.settings, prompts[0].token_count)
        if transfer
        else None,
        arrival,
    )
    shown = True
    if settings.reasoning_parser is not None:
        thinks, shown = reasoning_of(settings.reasoning_parser, body)
        generation.reasoning = thinks or rendered_thinking(body)
    plan = None
    if not plain:
        make_plan = partial(flavor.plan, body, engine.tokenizer, settings.max_logprobs)
        plan = await asyncio.to_thread(make_plan) if large else make_plan()
        if plan is not None:
            plan.token_ids = settings.return_tokens_as_token_ids
    check_work(prompts, body.n, max_tokens, settings.max_model_len, plan, settings.max_request_work)
    request_log = state.request_log
    if request_log is not None:
        request_log.log_inputs(body, generation, engine.tokenizer)
    stream = body.stream
    include_usage = settings.enable_force_include_usage or (
        body.include_usage if body.stream_options is not None else False
    )
    openai = flavor is CHAT or flavor is COMPLETION  # not an API translated into chat
    choices = generation.n * len(prompts)
    # vLLM's per-request metrics describe one sequence: none for several choices.
    timed = openai and settings.enable_per_request_metrics and choices == 1
    continuous_usage = (
        include_usage
        and openai
        and body.stream_options is not None
        and bool(body.stream_options.continuous_usage_stats)
    )
    stream_interval = settings.stream_interval
    if stream and body.stream_interval is not None:  # a request may only raise it, as in vLLM
        stream_interval = max(stream_interval, body.stream_interval)
    del body
    if state.engines is not None:  # data-parallel: the engine is chosen as the request is added
        index = engine_index(request, state.engines)
        engine, kv_agent = state.engines.engines[index], state.kv_agents[index]
    outputs = None
    if choices > 1:  # each choice tokenizes its answer: bounded, and made off the loop if long
        size = 0
        if answer is not None:
            size = choices * answer.size
            check_answer_work(size, settings.max_request_work)
        tokens = choices * (max_tokens or settings.max_model_len)
        if tokens > OFF_LOOP_TOKENS or size > OFF_LOOP_CHARS:
            outputs = await _outputs_off_loop(engine, generation, flavor)
    elif answer is not None and answer.size > OFF_LOOP_CHARS:  # one long structured answer
        outputs = await _outputs_off_loop(engine, generation, flavor)
    group = submit(engine, generation, outputs, flavor.prompt_param, LIMIT_NAMES)
    request[GENERATION] = group
    headers = {REQUEST_ID_HEADER: client_id} if client_id else None
    with group:
        if stream:
            meta = ResponseMeta(
                request_id, flavor.chunk_object, int(time.time()), target.name, plan
            )
            meta.reasoning_shown = shown
            meta.role = settings.response_role
            meta.continuous_usage = continuous_usage
            meta.stream_interval = stream_interval
            meta.fingerprint = state.fingerprint if openai else None
            if timed:
                meta.metrics = streamed_metrics
            response = await _stream(
                request, flavor, meta, group, include_usage, headers or {}, state
            )
            if request_log is not None:
                request_log.log_outputs(request_id, group, streaming=True)
            return response
        meta = ResponseMeta(request_id, flavor.object, int(time.time()), target.name, plan)
        meta.reasoning_shown = shown
        meta.fingerprint = state.fingerprint if openai else None
        await group.run()
        if request_log is not None:
            request_log.log_outputs(request_id, group, streaming=False)
        extra = {}
        if transfer and (params := kv_agent.answer_params(transfer, group, request_id)):
            extra["kv_transfer_params"] = params
        if timed:
            extra["metrics"] = request_metrics(group.sequences[0])
        if flavor.pieces is not None and (
            plan is not None or (choices > 1 and outputs is not None)
        ):
            return await write_pieces(request, flavor.pieces(meta, group, extra), headers)
        answer_body = flavor.body(meta, group)
        answer_body.update(extra)
        return web.Response(
            body=dumps(answer_body), content_type="application/json", headers=headers
        )


async def _stream(
    request: web.Request,
    flavor: Flavor,
    meta: ResponseMeta,
    group: RequestGroup,
    include_usage: bool,
    headers: dict[str, str],
    state: InferenceState,
) -> web.StreamResponse:
    faults = state.runtime.faults
    response = await open_stream(request, headers)
    writer = flavor.sink(request, response, meta)
    if meta.fingerprint is not None and not include_usage:
        writer.stamp_last_chunks(state.fingerprint_tail)
    sink: TokenSink = with_interval(writer, meta.stream_interval)
    if state.request_log is not None:
        sink = state.request_log.stream_sink(sink, meta.id, group.engine.tokenizer)
    cut_after = faults.stream_cut_after(sum(len(s.output) for s in group.sequences))
    if cut_after is not None:
        sink = CuttingSink(sink, cut_after)
    keep_alive = None
    interval = group.engine.settings.sse_keep_alive_interval
    if interval and (flavor is CHAT or flavor is COMPLETION):  # vLLM's two streams
        sink = keep_alive = KeepAliveSink(sink, writer, interval)
    try:
        if writer.logprobs is not None:
            await writer.logprobs.prepare([sequence.index for sequence in group.sequences])
            writer.share_batches(len(group.sequences))
        await group.run(sink)
        if keep_alive is not None:
            keep_alive.stop()
        await writer.close(meta, group, include_usage)
    except StreamCutError:
        faults.stream_cut()
        if request.transport is not None:
            request.transport.close()
    except ConnectionError:
        pass  # the client went away; leaving the ``with`` block aborts the rest
    except Exception:
        # The 200 and its headers are out: the client hears of the failure in the stream.
        logger.exception("stream %s failed after its headers were sent", meta.id)
        await writer.fail(STREAM_FAILED)
    finally:
        if keep_alive is not None:
            keep_alive.stop()
        request[STREAMED] = writer.sent
    return response


async def _answer(
    body: ChatCompletionRequest | CompletionRequest, engine: Engine, flavor: Flavor
) -> Answer | None:
    """Tool calls or structured output, decided before the engine paces the tokens.

    Client schemas and regexes are generated in a worker thread: their work is bounded
    (``engine/structured/budget.py``), and the event loop keeps serving meanwhile.
    """
    if not has_constraints(body):
        return None  # the common case costs one look at a few fields
    rng = request_rng(body.seed)
    try:
        if isinstance(body, ChatCompletionRequest):
            probability = engine.settings.tool_call_probability
            return await asyncio.to_thread(chat_answer, body, probability, rng)
        return await asyncio.to_thread(completion_answer, body, rng)
    except ServiceError as exc:
        raise renamed(exc, flavor.rename_param) from None


async def _outputs_off_loop(
    engine: Engine, generation: GenerationRequest, flavor: Flavor
) -> list[GeneratedText]:
    """The outputs of a request that may have many long answers, made in a worker thread."""
    try:
        return await asyncio.to_thread(engine.outputs, generation)
    except ContextLengthError as exc:
        raise context_error(exc, flavor.prompt_param, LIMIT_NAMES) from None
