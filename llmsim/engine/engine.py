"""The simulated inference engine: what the HTTP layer talks to.

A handler resolves the model, builds a :class:`GenerationRequest`, submits it and then
either awaits the result or streams it through a :class:`TokenSink`::

    with engine.submit(request) as group:      # raises QueueFullError at once
        await group.run(sink)                  # tokens arrive on schedule

Leaving the ``with`` block aborts whatever did not finish, so a cancelled handler (a
client that went away) always frees its slot. The engine imports nothing from the
HTTP layer and can be driven from plain asyncio code.

:meth:`Engine.pause` and :meth:`Engine.resume` (:mod:`~llmsim.engine.pausing`) are vLLM's
``pause_scheduler`` and ``resume_scheduler`` (sleep mode): requests keep queueing while
nothing new starts, and what is in flight is aborted with the tokens it has, run to
completion, or frozen.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence as Seq

from llmsim.engine.admission import admit, limited
from llmsim.engine.block_hash import BlockHasher
from llmsim.engine.generation import GeneratedText, generate
from llmsim.engine.kv_blocks import KVBlocks
from llmsim.engine.kv_listener import KVCacheListener
from llmsim.engine.lora import Adapter, LoraManager
from llmsim.engine.observer import EngineObserver, NullObserver
from llmsim.engine.output_limits import output_limits
from llmsim.engine.pacer import Outcome, Pacer, Pacing, TokenSink
from llmsim.engine.pausing import ABORT_GRACE, PAUSE_MODES, PauseMode, Pausing, wait_until
from llmsim.engine.request import (
    ContextLengthError,
    GenerationRequest,
    PromptInput,
    Target,
    UnknownModelError,
    base_targets,
)
from llmsim.engine.request_group import RequestGroup
from llmsim.engine.scheduler import Scheduler
from llmsim.engine.sequence import Sequence, State
from llmsim.engine.step.costs import FrontEnd, StepCosts
from llmsim.engine.step.step_engine import StepEngine
from llmsim.engine.step.step_loop import StepLoop
from llmsim.engine.step.wakeup import sleep_until
from llmsim.engine.timing import LatencyModel, latency_profile
from llmsim.engine.tokenizer import BuiltinTokenizer, Tokenizer, load_tokenizer, tokenize
from llmsim.settings.model import Settings

__all__ = [
    "ABORT_GRACE",
    "PAUSE_MODES",
    "ContextLengthError",
    "Engine",
    "GenerationRequest",
    "PauseMode",
    "PromptInput",
    "RequestGroup",
    "Target",
    "UnknownModelError",
]

logger = logging.getLogger("llmsim.engine")


class Engine(Pausing):
    def __init__(
        self,
        settings: Settings,
        observer: EngineObserver | None = None,
        *,
        block_hasher: BlockHasher | None = None,
        kv_listener: KVCacheListener | None = None,
    ) -> None:
        """``block_hasher`` and ``kv_listener`` serve the step latency model's prefix cache."""
        self.settings = settings
        self._base_targets = base_targets(settings.served_names)
        self.observer: EngineObserver = observer or NullObserver()
        self.tokenizer: Tokenizer = load_tokenizer(settings.tokenizer, settings.chat_template)
        builtin = isinstance(self.tokenizer, BuiltinTokenizer)
        self._split = tokenize if builtin else self.tokenizer.split
        seed = settings.seed
        self._text_rng = random.Random(seed)
        self._latency_rng = random.Random(None if seed is None else seed + 1)
        self.latency = self._latency_model(settings)
        self.loras = LoraManager(
            settings.max_loras, settings.cpu_lora_capacity, settings.lora_load_latency
        )
        for module in settings.adapters:
            self.loras.register(Adapter(module.name, module.path, module.base_model_name))
        self.blocks: KVBlocks | None = None
        if settings.kv_blocks and settings.latency_model != "step":
            self.blocks = KVBlocks(
                kv_cache_size=settings.kv_cache_size,
                block_size=settings.block_size,
                enable_prefix_caching=settings.enable_prefix_caching,
                hasher=block_hasher,
                listener=kv_listener,
            )
            self.blocks.kv.lora_ids = self.loras.int_id
        self.scheduler = Scheduler(
            max_running=settings.running_limit,
            max_waiting=settings.max_waiting_queue_length,
            loras=self.loras,
            observer=self.observer,
            clock=time.monotonic,
            blocks=self.blocks,
            by_priority=settings.scheduling_policy == "priority",
        )
        self.pacer = Pacer(lambda: self.observer, self._load)
        self.step: StepLoop | None = None
        self._frontend = FrontEnd()
        self._loop: asyncio.AbstractEventLoop | None = None
        if settings.latency_model == "step":
            step_rng = random.Random(None if seed is None else seed + 3)
            core = StepEngine.from_settings(
                settings, block_hasher=block_hasher, kv_listener=kv_listener, rng=step_rng
            )
            core.kv.lora_ids = self.loras.int_id
            self.step = StepLoop(core, lambda: self.observer)
        self.siblings: tuple[Engine, ...] = (self,)
        """The server's engines, this one included: the admission limits count them all."""
        self._limited = limited(settings)  # read once, not per request
        self.output_limits = output_limits(settings)
        """``max_tokens`` from the generation config (vLLM's ``--generation-config``)."""
        keeps_blocks = self.step is not None or self.blocks is not None
        self.needs_token_ids = keeps_blocks and settings.enable_prefix_caching
        """Whether prompts should carry token ids (a block-level prefix cache hashes them)."""

    @property
    def needs_output_ids(self) -> bool:
        """Whether generated text should carry its token ids: the step engine names every
        block decoding fills at once when a KV-event listener hears it (else only when a
        lookup needs it, rarely)."""
        return self.needs_token_ids and self.step is not None and self.step.engine.pool.reports

    def drop_kv_cache(self) -> None:
        """Sleep mode (level 1 and 2): forget every cached block (the listener hears
        ``all_blocks_cleared``); sequences a ``keep`` pause froze lose theirs too."""
        if self.step is not None:
            self.step.reset_prefix_cache()
        elif self.blocks is not None:
            self.blocks.clear_cache()

    async def reset_prefix_cache(self, reset_running_requests: bool = False) -> bool:
        """vLLM's ``reset_prefix_cache``: forget every cached block (the listener hears
        ``all_blocks_cleared``). As in vLLM it fails (False, nothing dropped) while running
        sequences hold blocks, unless ``reset_running_requests`` preempts them first: they
        recompute their prompt and tokens when scheduled again."""
        step = self.step
        if step is None:
            return self._reset_blocks(reset_running_requests)
        used = step.engine.pool.num_used
        if used and not reset_running_requests:
            logger.warning(
                "Failed to reset prefix cache because some blocks (%d) are not freed yet", used
            )
            return False
        if not used or self.scheduler.paused:
            step.reset_prefix_cache()  # a frozen step loop has its sequences preempted
            return True
        await self.pause("keep")  # between two steps, where preempting is safe
        step.reset_prefix_cache()
        self.resume()
        return True

    def _reset_blocks(self, reset_running_requests: bool) -> bool:
        """:meth:`reset_prefix_cache` without steps: nothing to preempt, so running
        sequences keep their blocks (unnamed) when ``reset_running_requests`` forces it."""
        blocks = self.blocks
        if blocks is None:
            return True
        if blocks.pool.num_used and not reset_running_requests:
            return False
        blocks.clear_cache()
        return True

    def reconfigure(self, settings: Settings) -> None:
        """Use the runtime-adjustable values of ``settings`` from now on.

        Sequences that already started keep the latency model they read at their start;
        everything else (mode, cold adapter loads, new sequences) follows at once.
        """
        self.latency = self._latency_model(settings)
        self.loras.load_latency = settings.lora_load_latency
        if self.step is not None:
            self.step.engine.costs = StepCosts.from_settings(settings)
            self.step.engine.scheduler.max_num_batched_tokens = settings.step_token_budget
        self.settings = settings
        self._limited = limited(settings)
        self.output_limits = output_limits(settings)
        self._base_targets = base_targets(settings.served_names)

    def _latency_model(self, settings: Settings) -> LatencyModel:
        """A fresh, immutable latency configuration; the jitter generator carries on."""
        return LatencyModel(
            latency_profile(settings),
            self._latency_rng,
        )

    # -- requests ---------------------------------------------------------------
    def resolve(self, model: str | None) -> Target:
        """Map a request's ``model`` to the base model or an adapter (vLLM's rules).

        A missing or empty name means the base model, as in vLLM.
        """
        base = self._base_targets.get(model)
        if base is not None:
            return base
        assert model  # None and "" are in the table: they mean the base model
        if self.loras.is_registered(model):
            return Target(model, model)
        raise UnknownModelError(model)

    def outputs(self, request: GenerationRequest) -> list[GeneratedText]:
        """Every choice's output, prompt by prompt, as :meth:`submit` makes them: plain work a
        caller may do in a worker thread for many long answers, then pass to :meth:`submit`."""
        self._check_context(request)
        rng = self._text_rng if request.seed is None else random.Random(request.seed)
        made: list[GeneratedText] = []
        for prompt in request.prompts:
            budget = self.answer_budget(prompt.token_count, request.max_tokens)
            made += (
                self._output(request, prompt, choice, budget, rng) for choice in range(request.n)
            )
        return made

    def answer_budget(self, prompt_tokens: int, requested: int | None) -> int:
        """The most tokens an answer to a prompt this long gets, the request's ``max_tokens``
        aside: the room left in the context window, within the generation config's limits."""
        room = self.settings.max_model_len - prompt_tokens
        limits = self.output_limits
        return room if limits is None else limits.budget(room, requested)

    def _output(
        self,
        request: GenerationRequest,
        prompt: PromptInput,
        choice: int,
        budget: int,
        rng: random.Random,
    ) -> GeneratedText:
        answer = request.answer
        return generate(
            answer=None if answer is None else answer.for_choice(choice),
            mode=self.settings.mode,
            echo_text=prompt.echo_text,
            max_tokens=request.max_tokens,
            budget=budget,
            ignore_eos=request.ignore_eos,
            stop=request.stop,
            rng=rng,
            split=self._split,
            with_ids=self.needs_output_ids,
            reasoning=request.reasoning,
        )

    def _check_context(self, request: GenerationRequest) -> None:
        max_len = self.settings.max_model_len
        for prompt in request.prompts:
            wanted = prompt.token_count + (request.max_tokens or 0)
            if prompt.token_count >= max_len or wanted > max_len:
                raise ContextLengthError(prompt.token_count, request.max_tokens, max_len)

    def submit(
        self, request: GenerationRequest, outputs: Seq[GeneratedText] | None = None
    ) -> RequestGroup:
        """Generate the outputs (unless :meth:`outputs` made them already) and hand the
        sequences to the scheduler."""
        self._check_context(request)
        if self._limited:  # over a queue limit: refused before anything is made
            schedulers = (engine.scheduler for engine in self.siblings)
            admit(schedulers, self.settings, len(request.prompts) * request.n, self.observer)
        rng = self._text_rng if request.seed is None else random.Random(request.seed)
        made = iter(outputs) if outputs is not None else None
        loop = self._running_loop()
        arrival = time.monotonic() if request.arrival is None else request.arrival
        sequences: list[Sequence] = []
        for prompt in request.prompts:
            budget = self.answer_budget(prompt.token_count, request.max_tokens)
            limit = budget if request.max_tokens is None else min(request.max_tokens, budget)
            for choice in range(request.n):
                if made is None:
                    text = self._output(request, prompt, choice, budget, rng)
                else:
                    text = next(made)
                sequence = Sequence(
                    request_id=request.request_id,
                    index=len(sequences),
                    adapter=request.target.adapter,
                    prompt_tokens=prompt.token_count,
                    output=text.tokens,
                    natural_finish=text.finish_reason,
                    stop_reason=text.stop_reason,
                    max_tokens=limit,
                    n=request.n,
                    arrival=arrival,
                    admitted=None,
                )
                # Set apart: a plain request leaves them all at their defaults.
                if prompt.token_ids is not None:
                    sequence.prompt_token_ids = prompt.token_ids
                    sequence.output_ids = text.ids
                if text.tool_calls or text.reported_finish is not None:
                    sequence.tool_calls = text.tool_calls
                    sequence.reported_finish = text.reported_finish
                if text.reasoning_end:
                    sequence.reasoning_end = text.reasoning_end
                if request.priority:
                    sequence.priority = request.priority
                if request.timing is not None or request.kv_transfer_delay is not None:
                    sequence.timing = request.timing
                    sequence.kv_transfer_delay = request.kv_transfer_delay
                sequences.append(sequence)
        self.scheduler.submit(sequences)
        for sequence in sequences:
            if sequence.state is State.WAITING:  # queued: its task waits for its admission
                sequence.admitted = loop.create_future()
        self.observer.request_submitted(request.n)
        return RequestGroup(self, request, sequences)

    async def wait_idle(self, timeout: float, poll: float = 0.02) -> bool:
        """Wait until nothing runs or waits; False if ``timeout`` passed first."""
        scheduler = self.scheduler
        return await wait_until(
            lambda: not (scheduler.num_running or scheduler.num_waiting), timeout, poll
        )

    # -- timing -----------------------------------------------------------------
    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop this engine serves on: asyncio asks the system for the process id each
        time it is asked, three times a request, so it is kept while it runs."""
        loop = self._loop
        if loop is None or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _load(self) -> tuple[int, int]:
        return self.scheduler.num_running, self.scheduler.max_running

    async def run_sequence(self, sequence: Sequence, sink: TokenSink | None) -> None:
        """Release the sequence's tokens on schedule; abort it if anything goes wrong."""
        if sequence.state is State.FINISHED:
            if sequence.cut_short and sink is not None:
                sink.finished(sequence)  # aborted by a pause before it ran: say so
            return  # aborted before it ran (e.g. by a shutdown): nothing to release
        if sink is None and self._finishes_at_once(sequence):
            try:
                self.pacer.release_at_once(sequence)
            except BaseException:
                self.scheduler.abort(sequence)
                raise
            self.scheduler.finish(sequence)
            return
        sequence.task = asyncio.current_task(self._running_loop())
        try:
            if sequence.state is State.WAITING:
                assert sequence.admitted is not None  # made as it was queued
                await sequence.admitted
            if sequence.cut_short:
                pass  # a pause's abort came first: nothing to release
            elif self.step is not None:
                await self._through_frontend(sequence)
                if not sequence.cut_short:
                    await self.step.run(sequence, sink)
            else:
                await self._pace(sequence, sink)
        except BaseException:
            if self.step is not None:
                self.step.abort(sequence)
            self.scheduler.abort(sequence)
            raise
        self.scheduler.finish(sequence)
        if sink is not None:
            sink.finished(sequence)

    def _finishes_at_once(self, sequence: Sequence) -> bool:
        """A running zero-latency sequence with nothing to wait for: its tokens are all due
        now, so they are released without a round through the pacer (no timer, no future).
        A streamed one still goes through it, whose batches let other writes in between."""
        ready = sequence.ready_at  # later than now while its adapter loads
        return (
            sequence.state is State.RUNNING
            and (ready is None or ready <= time.monotonic())
            and not sequence.cut_short
            and self.step is None
            and self.latency.instant
            and sequence.timing is None
            and sequence.kv_transfer_delay is None
            and not self.pacer.paused
        )

    async def _through_frontend(self, sequence: Sequence) -> None:
        """The step model's per-request time before the engine (HTTP, tokenization,
        scheduling): it delays this sequence's entry, not the steps of those running.

        It counts from the sequence's arrival, so this process's own time since then is
        part of it rather than added to it. The wait behind the running requests' streams is
        counted when the rest has passed, from the engine's load then, as in virtual time.
        """
        assert self.step is not None
        costs, entry = self.step.engine.costs, sequence.arrival
        if costs.frontend_latency > 0.0 or costs.frontend_serial_time > 0.0:
            entry = self._frontend.entry(sequence.arrival, costs)
            await sleep_until(entry)
        delay = self._frontend.load_delay(self.step.engine.num_running, costs)
        if delay > 0.0:
            await sleep_until(entry + delay)

    async def _pace(self, sequence: Sequence, sink: TokenSink | None) -> None:
        """Hand the sequence to the pacer and wait until its last token is out.

        Each token has a deadline (TTFT, then one ITL after another), so a late wake-up
        never stretches the schedule: whatever is due by then is released in one batch
        (one write), which is also what keeps zero-latency runs cheap.
        """
        latency = self.latency
        if sequence.timing is not None:
            latency = latency.overridden(sequence.timing)
        start = sequence.ready_at if sequence.ready_at is not None else time.monotonic()
        if sequence.kv_transfer_delay is not None:  # P/D decode: no prefill, a transfer
            deadline = start + sequence.kv_transfer_delay
        elif latency.instant:
            deadline = start
        else:
            running, max_running = self._load()
            deadline = start + latency.first_token_delay(
                sequence.prompt_tokens - sequence.cached_tokens,
                latency.load_factor(running, max_running),
            )
        loop = self._running_loop()
        pacing = Pacing(sequence, sink, latency, deadline, loop.create_future())
        while True:
            self.pacer.pace(pacing)
            if await pacing.done is Outcome.DONE:
                return
            assert sink is not None  # only a sink backs up
            await sink.drain()
            if sequence.cut_short:
                return  # cut while the client caught up: every token it keeps is out
            pacing.done = loop.create_future()
