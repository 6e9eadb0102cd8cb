"""Prometheus metrics shaped like vLLM v1's (``vllm/v1/metrics/loggers.py``).

Names, types, labels, help texts and bucket boundaries come from the list of vLLM's series
(:mod:`llmsim.observability.vllm_series`), so that dashboards, gateways and autoscalers
written for vLLM read llmsim unchanged. The metrics object is an
:class:`~llmsim.engine.EngineObserver`: it is fed by engine events, never by HTTP
handlers. Gauges of current state are computed when scraped, so they cost nothing
per token and can never drift from the scheduler; at that moment a metric override
(``--fake-metrics``, ``POST /admin/metrics``) may stand in for the live value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import Counter
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from llmsim.engine import Scheduler, Sequence
from llmsim.engine.kv_blocks import KVBlocks
from llmsim.engine.step import StepLoop, StepPlan, num_kv_blocks
from llmsim.observability.finished_requests import FinishedRequests
from llmsim.observability.kv_fetch import STAGES, StageCounts, pacer_stages, step_stages
from llmsim.observability.metric_types import (
    DerivedCounter,
    DerivedHistogram,
    FastCounter,
    FastHistogram,
    ZerosOf,
)
from llmsim.observability.overrides import MetricOverrides
from llmsim.observability.registry import SharedRegistry
from llmsim.observability.vllm_series import (
    ADMISSION_REASONS,
    CACHE_HIT_SOURCES,
    FINISHED_REASONS,
    PROMPT_TOKEN_SOURCES,
    cache_config_labels,
)
from llmsim.settings.fake_metrics import FakeMetrics
from llmsim.settings.model import Settings

CONTENT_TYPE = CONTENT_TYPE_LATEST
PHASES = {
    "e2e": "vllm:e2e_request_latency_seconds",
    "queue": "vllm:request_queue_time_seconds",
    "inference": "vllm:request_inference_time_seconds",
    "prefill": "vllm:request_prefill_time_seconds",
    "decode": "vllm:request_decode_time_seconds",
}
log = logging.getLogger(__name__)
RESIDENCY = (
    "vllm:kv_block_lifetime_seconds",
    "vllm:kv_block_idle_before_evict_seconds",
    "vllm:kv_block_reuse_gap_seconds",
)
ZERO_COUNTERS = (
    "vllm:external_prefix_cache_queries",
    "vllm:external_prefix_cache_hits",
    "vllm:mm_cache_queries",
    "vllm:mm_cache_hits",
)
"""Series vLLM always registers that stay 0 here (no KV connector cache, no multi-modal input)."""


class Metrics:
    """The Prometheus registry of one server and the engine observer that fills it.

    A server with several data-parallel engines has one ``Metrics`` per engine: the
    first owns the registry, the others pass it as ``parent`` and add their series to
    the same families with their own ``engine`` label, as vLLM's API server shows them.
    """

    _shared: SharedRegistry

    def __init__(
        self,
        settings: Settings,
        engine: int = 0,
        parent: Metrics | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``engine`` is the data-parallel rank, vLLM's ``engine`` label; fake values follow
        ``clock``."""
        shared: SharedRegistry = SharedRegistry(settings) if parent is None else parent._shared
        self._shared = shared
        self.registry = shared.registry
        self._max_lora = str(settings.max_loras)
        self._engine_label = str(engine)
        values = (settings.model_label, str(engine))
        self._values = values
        families = shared.families
        self.families = families
        """Every counter and histogram family by vLLM's name, for whoever sets them directly."""

        def counter(name: str) -> FastCounter:
            return families[name].counter(*values)

        def histogram(name: str) -> FastHistogram:
            return families[name].histogram(*values)

        self.preemptions = counter("vllm:num_preemptions")
        self.prompt_tokens = counter("vllm:prompt_tokens")
        self.prompt_tokens_cached = counter("vllm:prompt_tokens_cached")
        by_source = families["vllm:prompt_tokens_by_source"]
        computed, cache_hit, transferred = PROMPT_TOKEN_SOURCES
        self.cache_hit_tokens = by_source.counter(*values, cache_hit)
        self.transferred_tokens = by_source.counter(*values, transferred)
        # computed = all prompt tokens but those: nothing to add for a plain prompt
        by_source.derive(
            DerivedCounter(self.prompt_tokens, self.cache_hit_tokens, self.transferred_tokens),
            *values,
            computed,
        )
        self.generation_tokens = counter("vllm:generation_tokens")
        self.prefix_cache_queries = counter("vllm:prefix_cache_queries")
        self.prefix_cache_hits = counter("vllm:prefix_cache_hits")
        by_tier = families["vllm:prompt_tokens_cached_by_source"]
        device, *tiers = CACHE_HIT_SOURCES  # no tier but the device's cache is simulated
        by_tier.derive(DerivedCounter(self.prefix_cache_hits), *values, device)
        for tier in tiers:
            by_tier.counter(*values, tier)
        rejections = families["vllm:admission_rejections"]  # server-wide: no engine label
        self._rejections = {
            reason: rejections.counter(settings.model_label, reason) for reason in ADMISSION_REASONS
        }
        for name in ZERO_COUNTERS:
            counter(name)
        success = families["vllm:request_success"]
        self._success = {reason: success.counter(*values, reason) for reason in FINISHED_REASONS}
        self._request_prompt_tokens = histogram("vllm:request_prompt_tokens")
        self._request_generation_tokens = histogram("vllm:request_generation_tokens")
        self._request_max_tokens = histogram("vllm:request_params_max_tokens")
        self.request_n = histogram("vllm:request_params_n")
        # Observations equal to another histogram's for a plain request (n = 1, nothing
        # cached): only the exceptions cost an update.
        self.request_max_generated = self._derive(
            "vllm:request_max_num_generation_tokens", self._request_generation_tokens
        )
        self.request_kv_computed = self._derive(
            "vllm:request_prefill_kv_computed_tokens", self._request_prompt_tokens
        )
        preemptions = families["vllm:request_num_preemptions"]
        assert preemptions.buckets is not None
        self.request_preemptions = ZerosOf(self._request_prompt_tokens, preemptions.buckets)
        preemptions.derive(self.request_preemptions, *values)
        self.iteration_tokens = histogram("vllm:iteration_tokens_total")
        self.ttft = histogram("vllm:time_to_first_token_seconds")
        self.itl = histogram("vllm:inter_token_latency_seconds")
        self.tpot = histogram("vllm:time_per_output_token_seconds")
        self._request_tpot = histogram("vllm:request_time_per_output_token_seconds")
        self._phase = {key: histogram(name) for key, name in PHASES.items()}
        self._finished = FinishedRequests(
            self._success,
            self._phase,
            self._request_tpot,
            self._request_prompt_tokens,
            self._request_generation_tokens,
            self._request_max_tokens,
        )
        shared.fast.before.append(self._finished.fold)
        self._siblings: dict[tuple[str, int], tuple[int, int]] = {}
        """Requests with ``n`` > 1: (request id, prompt) -> (sequences left, most generated)."""
        self._register_gauges(settings, values)
        self._lora_labels: tuple[str, str, str] | None = None
        self._no_lora_labels = (self._max_lora, "", "")
        self._scheduler_waiting: Callable[[], int] = lambda: 0
        self._deferred: Callable[[], int] = lambda: 0
        self.injected_failures: Counter
        self.upstream_requests: Counter
        self.overrides: MetricOverrides
        if parent is not None:  # the server-wide series and overrides are the first's
            self.injected_failures = parent.injected_failures
            self.upstream_requests = parent.upstream_requests
            self.overrides = parent.overrides
            return
        reg = self.registry
        self.injected_failures = Counter(
            "llmsim:injected_failures",
            "Failures injected on purpose: errors (never in vllm: metrics) and stream cuts "
            "(their sequences also count as vllm aborts).",
            ["type"],
            registry=reg,
        )
        self.upstream_requests = Counter(
            "llmsim:upstream_requests",
            "Inference requests with --upstream: answered by the upstream, or simulated "
            "because it failed or timed out.",
            ["outcome"],
            registry=reg,
        )
        if settings.kv_cache_metrics and settings.latency_model != "step":
            log.warning(
                "--kv-cache-metrics: only --latency-model step keeps KV blocks; with the %s "
                "model no residency metrics are exported",
                settings.latency_model,
            )
        self.overrides = MetricOverrides(
            clock,
            self.registry.collect,
            refresh_interval=settings.fake_metrics_refresh_interval,
            defaults={"model_name": settings.model_label, "engine": str(engine)},
        )

    def _derive(self, name: str, base: FastHistogram) -> DerivedHistogram:
        family = self.families[name]
        assert family.buckets is not None
        derived = DerivedHistogram(base, family.buckets)
        family.derive(derived, *self._values)
        return derived

    def _register_gauges(self, settings: Settings, values: tuple[str, str]) -> None:
        gauges = self._shared.gauges
        self._gauges = tuple(
            gauges[name].labels(*values)
            for name in (
                "vllm:num_requests_running",
                "vllm:num_requests_waiting",
                "vllm:kv_cache_usage_perc",
            )
        )
        by_reason = gauges["vllm:num_requests_waiting_by_reason"]
        self._by_reason = (
            by_reason.labels(*values, "capacity"),
            by_reason.labels(*values, "deferred"),
        )
        self.lora_info = gauges["vllm:lora_requests_info"]
        info = cache_config_labels(
            settings, num_kv_blocks(settings.kv_cache_size, settings.block_size)
        )
        gauges["vllm:cache_config_info"].labels(*info.values(), self._engine_label).set(1)

    def current_load(self) -> tuple[float, ...]:
        """Running and waiting requests and KV-cache usage (0-1), as a scrape reads them."""
        return tuple(next(iter(gauge._child_samples())).value for gauge in self._gauges)

    # -- wiring -----------------------------------------------------------------
    def track(self, scheduler: Scheduler, kv_cache_size: int) -> None:
        """Read the current-state gauges from ``scheduler`` at every scrape."""
        running, waiting, kv_usage = self._gauges
        self._scheduler_waiting = lambda: scheduler.num_waiting
        running.set_function(lambda: scheduler.num_running)
        waiting.set_function(lambda: scheduler.num_waiting)
        kv_usage.set_function(lambda: min(scheduler.kv_tokens() / kv_cache_size, 1.0))
        self._deferred = scheduler.num_deferred
        self._track_reasons(self._deferred)
        self._track_kv_fetch(pacer_stages(scheduler))
        self.scheduler_changed(scheduler)

    def track_blocks(self, blocks: KVBlocks) -> None:
        """``kv_blocks`` under the constant and per-token models: the usage gauge reads the
        block pool, and every admission's prefix-cache lookup is counted."""
        self._gauges[2].set_function(blocks.usage)
        queries, hits = self.prefix_cache_queries, self.prefix_cache_hits

        def looked_up(queried: int, hit: int) -> None:
            queries.inc(queried)
            if hit:
                hits.inc(hit)

        blocks.looked_up = looked_up

    def _track_reasons(self, deferred: Callable[[], int]) -> None:
        """``capacity`` + ``deferred`` = the waiting gauge, pinned or live."""
        waiting = self._reader("num_requests_waiting", self._scheduler_waiting)
        capacity, deferred_gauge = self._by_reason
        capacity.set_function(lambda: max(waiting() - deferred(), 0))
        deferred_gauge.set_function(deferred)

    def _track_kv_fetch(self, counts: StageCounts) -> None:
        """``vllm:num_requests_kv_fetch_by_stage``, on a KV consumer (:mod:`.kv_fetch`)."""
        family = self._shared.gauges.get("vllm:num_requests_kv_fetch_by_stage")
        if family is None:
            return
        queued, receiving, arrived = (family.labels(*self._values, stage) for stage in STAGES)
        queued.set_function(lambda: counts()[0])
        receiving.set_function(lambda: counts()[1])
        arrived.set(0)

    def track_step(self, step: StepLoop, settings: Settings) -> None:
        """Step mode: gauges from the engine loop and its blocks, and the step metrics."""
        engine = step.engine
        running, waiting, kv_usage = self._gauges
        outer = self._scheduler_waiting
        self._scheduler_waiting = lambda: outer() + engine.num_waiting
        running.set_function(lambda: engine.num_running)
        waiting.set_function(self._scheduler_waiting)
        kv_usage.set_function(engine.usage)
        outer_deferred = self._deferred
        self._track_reasons(lambda: outer_deferred() + len(engine.scheduler.receiving))
        self._track_kv_fetch(step_stages(engine))
        if engine.pool.residency is not None:
            engine.pool.residency.listener = self._residency_histograms(settings)
        step.step_observers.append(self)

    def _residency_histograms(
        self, settings: Settings
    ) -> Callable[[float, float, list[float]], None]:
        """``--kv-cache-metrics``: the three residency histograms, and what fills them."""
        lifetime, idle, reuse = (
            self._shared.family(name).histogram(*self._values) for name in RESIDENCY
        )

        def evicted(lived: float, idled: float, gaps: list[float]) -> None:
            lifetime.observe(lived)
            idle.observe(idled)
            for gap in gaps:
                reuse.observe(gap)

        return evicted

    def step_done(self, plan: StepPlan, duration: float) -> None:
        """One engine step ran (the step engine's observer)."""
        if plan.num_tokens:
            self.iteration_tokens.observe(plan.num_tokens)
        if plan.preempted:
            self.preemptions.inc(len(plan.preempted))
        if plan.prefix_queries:
            self.prefix_cache_queries.inc(plan.prefix_queries)
            self.prefix_cache_hits.inc(plan.prefix_hits)

    def decode_run_done(self, segments: list[tuple[int, int]]) -> None:
        """Zero-length decode steps ran at once: ``(tokens per step, steps)`` in order."""
        observe = self.iteration_tokens.observe_repeated
        for tokens, steps in segments:
            observe(tokens, steps)

    def _reader(self, name: str, live: Callable[[], float]) -> Callable[[], float]:
        """The gauge's value at scrape time: the override when one pins it, else ``live``."""
        overrides = self.overrides

        def read() -> float:
            pinned = overrides.value(name)
            return live() if pinned is None else pinned

        return read

    def set_overrides(self, spec: FakeMetrics | None) -> None:
        """Fake series as ``spec`` says (None restores the live values); time functions
        restart. Raises :class:`FakeMetricsError` (and changes nothing) when ``spec`` names
        a series the registry lacks or gives the wrong form for its type."""
        had_loras = self.overrides.loras() is not None
        self.overrides.set(spec)
        if had_loras and self.overrides.loras() is None and self._lora_labels is not None:
            # Make the live LoRA state the newest series again.
            self.lora_info.labels(*self._lora_labels).set(time.time())

    def upstream_request(self, outcome: str) -> None:
        """``upstream``, ``fallback_error`` or ``fallback_timeout``."""
        self.upstream_requests.labels(outcome).inc()

    def admission_rejected(self, reason: str) -> None:
        self._rejections[reason].inc()

    def injected_failure(self, fault_type: str) -> None:
        self.injected_failures.labels(fault_type).inc()

    def exposition(self) -> bytes:
        loras = self.overrides.loras()
        if loras is not None:
            # The pinned adapter lists become the newest series, the one consumers read.
            self.lora_info.labels(
                self._max_lora, ",".join(loras.waiting), ",".join(loras.running)
            ).set(time.time())
        return generate_latest(self.overrides)

    # -- EngineObserver ---------------------------------------------------------
    def request_submitted(self, n: int) -> None:
        self.request_n.observe(n)

    def scheduler_changed(self, scheduler: Scheduler) -> None:
        if not scheduler.has_adapters and self._lora_labels == self._no_lora_labels:
            return  # base-model traffic: the adapter lists stay empty
        labels = (
            self._max_lora,
            ",".join(scheduler.waiting_adapters()),
            ",".join(scheduler.running_adapters()),
        )
        if labels != self._lora_labels:
            self._lora_labels = labels
            self.lora_info.labels(*labels).set(time.time())

    def first_token(self, sequence: Sequence, time_to_first_token: float) -> None:
        self.ttft.observe(time_to_first_token)
        self.prompt_tokens.inc(sequence.prompt_tokens)
        self.generation_tokens.inc()
        if sequence.cached_tokens or sequence.kv_transfer_delay is not None:
            self._not_computed(sequence)

    def _not_computed(self, sequence: Sequence) -> None:
        """Count the prompt tokens found in the prefix cache or received from a prefill
        instance (P/D); those computed are the rest."""
        cached = sequence.cached_tokens
        received = 0 if sequence.kv_transfer_delay is None else sequence.prompt_tokens - cached
        self.cache_hit_tokens.inc(cached)
        self.transferred_tokens.inc(received)
        self.prompt_tokens_cached.inc(cached + received)

    def next_tokens(self, sequence: Sequence, gap: float | None, overdue: int) -> None:
        itl, tpot = self.itl, self.tpot
        if gap == 0.0 and overdue:  # a zero-latency run: one bucket for all of them
            itl.observe_repeated(0.0, overdue + 1)
            tpot.observe_repeated(0.0, overdue + 1)
            self.generation_tokens.inc(overdue + 1)
            return
        if gap is not None:
            itl.observe(gap)
            tpot.observe(gap)
        if overdue:
            itl.observe_repeated(0.0, overdue)
            tpot.observe_repeated(0.0, overdue)
        self.generation_tokens.inc(overdue + (gap is not None))

    def zero_gap_tokens(self, count: int) -> None:
        self.itl.observe_repeated(0.0, count)
        self.tpot.observe_repeated(0.0, count)
        self.generation_tokens.inc(count)

    @property
    def success(self) -> dict[str, FastCounter]:
        self._finished.fold()
        return self._success

    @property
    def phase(self) -> dict[str, FastHistogram]:
        self._finished.fold()
        return self._phase

    def sequence_finished(self, sequence: Sequence) -> None:
        if not self._finished.keep(sequence):  # not the common request: counted now
            self._sequence_finished(sequence)

    def _sequence_finished(self, sequence: Sequence) -> None:
        reason = sequence.finish_reason or "abort"
        if reason == "abort":
            self._success[reason].inc()
            if sequence.n > 1:
                self._sibling_finished(sequence, observed=False)
            return
        arrival = sequence.arrival
        scheduled = sequence.scheduled_at if sequence.scheduled_at is not None else arrival
        first = sequence.first_token_at if sequence.first_token_at is not None else scheduled
        # The release of the last token ends the request, as vLLM's front end times it.
        last = sequence.last_token_at
        if last is None:
            last = sequence.finished_at if sequence.finished_at is not None else time.monotonic()
        prompt = sequence.prompt_tokens
        row = (
            reason,
            arrival,
            scheduled,
            first,
            last,
            sequence.generated,
            prompt,
            sequence.max_tokens,
        )
        self._finished.add(row)
        if sequence.num_preemptions:
            self.request_preemptions.replace_zero(sequence.num_preemptions)
        if sequence.cached_tokens or sequence.kv_transfer_delay is not None:
            cached = prompt if sequence.kv_transfer_delay is not None else sequence.cached_tokens
            self.request_kv_computed.replace(prompt, prompt - cached)
        if sequence.n > 1:
            self._sibling_finished(sequence, observed=True)

    def _sibling_finished(self, sequence: Sequence, *, observed: bool) -> None:
        """One of a request's ``n`` sequences finished (``observed``: its generated tokens
        were): once all have, the most any of them generated stands for them all in
        ``vllm:request_max_num_generation_tokens``, once per request and prompt."""
        if observed:
            self.request_max_generated.replace(sequence.generated, None)
        key = (sequence.request_id, sequence.index // sequence.n)
        left, most = self._siblings.get(key) or (sequence.n, 0)
        most = max(most, sequence.generated)
        if left > 1:
            self._siblings[key] = (left - 1, most)
            return
        self._siblings.pop(key, None)
        self.request_max_generated.add(most)
