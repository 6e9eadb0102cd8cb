"""From a validated tokens-in request to sequences running on the engine.

The order is the HTTP endpoints' order: readiness, injected faults, the model, sampling
limits, the prompt, a constrained answer, then the engine's own admission (context window,
waiting queue). Every refusal is a :class:`~llmsim.service.errors.ServiceError`.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

from llmsim.answers import Responder
from llmsim.engine import (
    AdmissionError,
    ContextLengthError,
    Engine,
    GenerationRequest,
    PromptInput,
    QueueFullError,
    RequestGroup,
    Sequence,
    Target,
    UnknownModelError,
)
from llmsim.engine.data_parallel import DataParallelEngines
from llmsim.engine.generation import GeneratedText
from llmsim.engine.tokenizer import Tokenizer
from llmsim.runtime.adjustable import Runtime
from llmsim.runtime.faults import InvalidForceHeaderError
from llmsim.runtime.lifecycle import Lifecycle
from llmsim.service.answers import choose, prompt_view
from llmsim.service.constraints import Constraint, constrained
from llmsim.service.errors import ErrorKind, ServiceError, invalid
from llmsim.service.load import ServerLoad
from llmsim.service.prompts import piece_id, text_prompt, token_prompt
from llmsim.service.sampling import Sampling, check_sampling, generation_request

NOT_SERVING = {
    "loading": "The model is still loading; retry shortly.",
    "draining": "The server is shutting down.",
}


@dataclass(frozen=True, slots=True)
class ServiceState:
    """One server's engines and the run-time state every door consults."""

    engine: Engine
    """The first engine (its settings and tokenizer are every engine's)."""
    lifecycle: Lifecycle
    runtime: Runtime
    engines: DataParallelEngines | None = None
    """Every engine when the server has more than one (data-parallel ranks)."""
    responder: Responder | None = None
    """The answer sources (response rules, tasks, datasets, replays) HTTP asks too."""
    load: ServerLoad = field(default_factory=ServerLoad)
    """The in-flight count ``GET /load`` answers, shared with the HTTP routes."""

    @property
    def busy(self) -> int:
        """Sequences running or waiting on any engine."""
        if self.engines is not None:
            return self.engines.busy
        return self.engine.scheduler.num_running + self.engine.scheduler.num_waiting

    @property
    def paused(self) -> bool:
        """Whether some engine's scheduler is paused (sleep mode)."""
        engines = self.engines.engines if self.engines is not None else (self.engine,)
        return any(engine.scheduler.paused for engine in engines)


def pick_engine(state: ServiceState, rank: int | None = None) -> Engine:
    """The engine that takes a request: the asked data-parallel ``rank``, else vLLM's
    balancing between the engines."""
    engines = state.engines
    if engines is None or len(engines.engines) == 1:
        return state.engine
    return engines.engines[engine_index(engines, rank)]


def engine_index(engines: DataParallelEngines, asked: int | str | None) -> int:
    """The index in ``engines`` of the engine for the data-parallel rank ``asked`` (as a
    header or metadata value: text that is not a whole number is ignored, as vLLM ignores
    it); without one, vLLM's balancing picks the least loaded engine. A rank this server
    does not run is refused."""
    if asked is None:
        return engines.choose()
    try:
        rank = int(asked)
    except ValueError:
        return engines.choose()
    index = engines.index_of(rank)
    if index is None:
        first, last = engines.ranks[0], engines.ranks[-1]
        raise invalid(f"data_parallel_rank {rank} is out of range [{first}, {last + 1}).")
    return index


@dataclass(slots=True)
class TokenRequest:
    """A tokens-in generation request, already parsed from its wire format."""

    request_id: str
    token_ids: Seq[int] | None = None
    """The prompt as token ids, taken as given; else ``text`` is tokenized."""
    text: str | None = None
    sampling: Sampling | None = None
    constraint: Constraint | None = None
    model: str | None = None
    kv_transfer_delay: float | None = None
    forced_fault: str | None = None
    """A forced injected error status (HTTP's ``X-Return-Error``), as text."""
    data_parallel_rank: int | None = None
    """The engine asked for (HTTP's ``X-data-parallel-rank``); None: balanced."""


def check_serving(lifecycle: Lifecycle) -> None:
    """UNAVAILABLE while the simulated model loads and while the server drains."""
    phase = lifecycle.phase
    if phase != "ready":
        raise ServiceError(ErrorKind.UNAVAILABLE, NOT_SERVING[phase])


def inject_fault(
    runtime: Runtime, forced: str | None, model: str, source: str | None = None
) -> None:
    """The configured failure injection, or the one the client forced (in ``source``: the
    header or metadata key it came in, named in the error and as its ``param``)."""
    try:
        fault = runtime.faults.pick(forced, model)
    except InvalidForceHeaderError:
        name = source or "A forced error"
        raise invalid(f"{name} must be an HTTP error status from 400 to 599.", source) from None
    if fault is not None:
        raise ServiceError(ErrorKind.FAULT, fault.message, fault.param, fault.status)


def resolve(engine: Engine, model: str | None) -> Target:
    try:
        return engine.resolve(model)
    except UnknownModelError as exc:
        raise ServiceError(
            ErrorKind.NOT_FOUND, f"The model `{exc.name}` does not exist.", "model"
        ) from None


async def start(state: ServiceState, request: TokenRequest) -> RequestGroup:
    """Check ``request`` and submit it; the caller runs the group inside ``with group:``."""
    settings = state.engine.settings
    check_serving(state.lifecycle)
    inject_fault(state.runtime, request.forced_fault, request.model or settings.served_names[0])
    engine = pick_engine(state, request.data_parallel_rank)
    target = resolve(engine, request.model)
    sampling = request.sampling or Sampling()
    check_sampling(sampling, engine.tokenizer, settings.max_logprobs, settings.max_running_requests)
    prompt = _prompt(request, sampling, engine)
    answer = constrained(request.constraint, sampling.seed)
    max_tokens, timing = sampling.max_tokens, None
    responder = state.responder
    if responder is not None and responder.active:
        view = prompt_view(target, prompt.echo_text, max_tokens, sampling.seed)
        chosen = await choose(responder, view, settings.mode, max_tokens)
        answer, max_tokens, timing = chosen.answer or answer, chosen.max_tokens, chosen.timing
    generation = generation_request(
        request.request_id,
        target,
        [prompt],
        sampling,
        max_tokens,
        answer,
        timing,
        request.kv_transfer_delay,
    )
    return submit(engine, generation)


def _prompt(request: TokenRequest, sampling: Sampling, engine: Engine) -> PromptInput:
    limit, truncate = engine.settings.max_model_len, sampling.truncate_prompt_tokens
    tokenizer, with_ids = engine.tokenizer, engine.needs_token_ids
    if request.token_ids is not None:
        return token_prompt(request.token_ids, tokenizer, with_ids, truncate, limit)
    return text_prompt(request.text or "", tokenizer, with_ids, truncate, limit)


def submit(
    engine: Engine,
    generation: GenerationRequest,
    outputs: list[GeneratedText] | None = None,
    prompt_param: str = "prompt",
    limit_names: str = "'max_tokens'",
) -> RequestGroup:
    """The engine's admission, its refusals in vLLM's words; ``outputs`` made beforehand
    (off the event loop) when given. ``prompt_param`` and ``limit_names`` name the request's
    fields as its API spells them in a context-length error."""
    try:
        if outputs is None:
            return engine.submit(generation)
        return engine.submit(generation, outputs)
    except ContextLengthError as exc:
        raise context_error(exc, prompt_param, limit_names) from None
    except AdmissionError as exc:
        raise ServiceError(
            ErrorKind.UNAVAILABLE, exc.message, status=503, type="Service Unavailable"
        ) from None
    except QueueFullError:
        limit = engine.settings.max_waiting_queue_length
        raise ServiceError(
            ErrorKind.OVERLOADED,
            f"The server is overloaded: the waiting queue is full ({limit} sequences). Retry later.",
        ) from None


def context_error(
    exc: ContextLengthError, prompt_param: str = "prompt", limit_names: str = "'max_tokens'"
) -> ServiceError:
    limit, prompt = exc.max_model_len, exc.prompt_tokens
    if prompt >= limit or exc.max_tokens is None:
        what = "input" if prompt_param == "input" else f"input {prompt_param}"
        return invalid(
            f"This model's maximum context length is {limit} tokens. However, your request has "
            f"{prompt} input tokens. Please reduce the length of the {what}.",
            prompt_param,
        )
    return invalid(
        f"{limit_names} is too large: {exc.max_tokens}. This model's maximum context length is "
        f"{limit} tokens and your request has {prompt} input tokens "
        f"({exc.max_tokens} > {limit} - {prompt}).",
        "max_tokens",
    )


def output_ids(
    sequence: Sequence, tokenizer: Tokenizer, start: int = 0, end: int | None = None
) -> list[int]:
    """The ids of ``sequence``'s output tokens ``start:end`` (known, or looked up per piece)."""
    stop = sequence.generated if end is None else end
    known = sequence.output_ids
    if known is not None and len(known) >= stop:
        return list(known[start:stop])
    return [piece_id(tokenizer, piece) for piece in sequence.output[start:stop]]
