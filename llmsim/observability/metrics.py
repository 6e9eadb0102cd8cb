"""Prometheus metrics shaped like vLLM v1's (``vllm/v1/metrics/loggers.py``).

Names, types, labels and bucket boundaries follow vLLM so that dashboards, gateways
and autoscalers written for vLLM read llmsim unchanged. The metrics object is an
:class:`~llmsim.engine.EngineObserver`: it is fed by engine events, never by HTTP
handlers. Gauges of current state are computed when scraped, so they cost nothing
per token and can never drift from the scheduler; at that moment a metric override
(``--fake-metrics``, ``POST /admin/metrics``) may stand in for the live value.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from llmsim.engine import Scheduler, Sequence
from llmsim.engine.step import StepLoop, StepPlan
from llmsim.observability.metric_types import FastCollector, FastCounter, FastFamily, FastHistogram
from llmsim.observability.overrides import MetricOverrides
from llmsim.settings.fake_metrics import FakeMetrics
from llmsim.settings.model import Settings

TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
TOKEN_GAP_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
    40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
N_BUCKETS = (1, 2, 5, 10, 20)
ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
FINISH_REASONS = ("stop", "length", "abort")
CONTENT_TYPE = CONTENT_TYPE_LATEST


def build_1_2_5_buckets(maximum: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to ``maximum`` (vLLM's token-count buckets)."""
    buckets: list[int] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > maximum:
                return buckets
            buckets.append(value)
        exponent += 1


class _Families:
    """One server's registry and metric families; each engine adds its own label set."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.fast = FastCollector()
        self._gauges: dict[str, Gauge] = {}
        self._fast: dict[str, FastFamily] = {}

    def gauge(self, name: str, doc: str, labels: list[str]) -> Gauge:
        if name not in self._gauges:
            self._gauges[name] = Gauge(name, doc, labels, registry=self.registry)
        return self._gauges[name]

    def family(
        self,
        name: str,
        doc: str,
        labels: list[str],
        buckets: tuple[float, ...] | list[int] | None = None,
    ) -> FastFamily:
        if name not in self._fast:
            self._fast[name] = self.fast.add(FastFamily(name, doc, labels, buckets))
        return self._fast[name]


class Metrics:
    """The Prometheus registry of one server and the engine observer that fills it.

    A server with several data-parallel engines has one ``Metrics`` per engine: the
    first owns the registry, the others pass it as ``parent`` and add their series to
    the same families with their own ``engine`` label, as vLLM's API server shows them.
    """

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
        families: _Families = _Families() if parent is None else parent.families
        self.families: _Families = families
        self.registry = reg = families.registry
        self._max_lora = str(settings.max_loras)
        labels = ["model_name", "engine"]
        values = (settings.model_label, str(engine))
        token_buckets = build_1_2_5_buckets(settings.max_model_len)

        def gauge(name: str, doc: str) -> Gauge:
            return families.gauge(name, doc, labels)

        def counter(name: str, doc: str) -> FastCounter:
            return families.family(name, doc, labels).counter(*values)

        def histogram(name: str, doc: str, buckets: tuple[float, ...] | list[int]) -> FastHistogram:
            return families.family(name, doc, labels, buckets).histogram(*values)

        self._running = gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches."
        )
        self._waiting = gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed."
        )
        self._kv_usage = gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."
        )
        self.lora_info = families.gauge(
            "vllm:lora_requests_info",
            "Running stats on lora requests.",
            ["max_lora", "waiting_lora_adapters", "running_lora_adapters"],
        )
        self.preemptions = counter(
            "vllm:num_preemptions", "Cumulative number of preemption from the engine."
        )
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter(
            "vllm:generation_tokens", "Number of generation tokens processed."
        )
        success = families.family(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*labels, "finished_reason"],
        )
        self.success = {reason: success.counter(*values, reason) for reason in FINISH_REASONS}
        self.request_prompt_tokens = histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", token_buckets
        )
        self.request_generation_tokens = histogram(
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            token_buckets,
        )
        self.request_max_tokens = histogram(
            "vllm:request_params_max_tokens",
            "Histogram of the max_tokens request parameter.",
            token_buckets,
        )
        self.request_n = histogram(
            "vllm:request_params_n", "Histogram of the n request parameter.", N_BUCKETS
        )
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            TTFT_BUCKETS,
        )
        self.itl = histogram(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            TOKEN_GAP_BUCKETS,
        )
        self.tpot = histogram(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds.",
            TOKEN_GAP_BUCKETS,
        )
        phase = {
            "e2e": (
                "vllm:e2e_request_latency_seconds",
                "Histogram of e2e request latency in seconds.",
            ),
            "queue": (
                "vllm:request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request.",
            ),
            "inference": (
                "vllm:request_inference_time_seconds",
                "Histogram of time spent in RUNNING phase for request.",
            ),
            "prefill": (
                "vllm:request_prefill_time_seconds",
                "Histogram of time spent in PREFILL phase for request.",
            ),
            "decode": (
                "vllm:request_decode_time_seconds",
                "Histogram of time spent in DECODE phase for request.",
            ),
        }
        self.phase = {
            key: histogram(name, doc, REQUEST_LATENCY_BUCKETS) for key, (name, doc) in phase.items()
        }
        # -- the step engine's own metrics (latency model "step") -----------------
        self._step_counter: Callable[[str, str], FastCounter] = counter
        self._step_histogram: Callable[[str, str, tuple[float, ...] | list[int]], FastHistogram] = (
            histogram
        )
        self._engine_label = str(engine)
        self._scheduler_waiting: Callable[[], int] = lambda: 0
        self._gauges = (
            self._running.labels(*values),
            self._waiting.labels(*values),
            self._kv_usage.labels(*values),
        )
        self._lora_labels: tuple[str, str, str] | None = None
        self.injected_failures: Counter
        self.upstream_requests: Counter
        self.overrides: MetricOverrides
        if parent is not None:  # the server-wide series and overrides are the first's
            self.injected_failures = parent.injected_failures
            self.upstream_requests = parent.upstream_requests
            self.overrides = parent.overrides
            return
        reg.register(families.fast)
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
        self.overrides = MetricOverrides(
            clock,
            self.registry.collect,
            refresh_interval=settings.fake_metrics_refresh_interval,
            defaults={"model_name": settings.model_label, "engine": str(engine)},
        )

    # -- wiring -----------------------------------------------------------------
    def track(self, scheduler: Scheduler, kv_cache_size: int) -> None:
        """Read the current-state gauges from ``scheduler`` at every scrape."""
        running, waiting, kv_usage = self._gauges
        self._scheduler_waiting = lambda: scheduler.num_waiting
        running.set_function(lambda: scheduler.num_running)
        waiting.set_function(lambda: scheduler.num_waiting)
        kv_usage.set_function(lambda: min(scheduler.kv_tokens() / kv_cache_size, 1.0))
        self.scheduler_changed(scheduler)

    def track_step(self, step: StepLoop, settings: Settings) -> None:
        """Step mode: gauges from the engine loop and its blocks, and the step metrics."""
        engine = step.engine
        running, waiting, kv_usage = self._gauges
        scheduler_waiting = self._scheduler_waiting
        running.set_function(lambda: engine.num_running)
        waiting.set_function(lambda: scheduler_waiting() + engine.num_waiting)
        kv_usage.set_function(engine.usage)
        counter, histogram = self._step_counter, self._step_histogram
        self.prefix_cache_queries = counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
        )
        self.prefix_cache_hits = counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."
        )
        self.iteration_tokens = histogram(
            "vllm:iteration_tokens_total",
            "Histogram of number of tokens per engine_step.",
            ITERATION_TOKEN_BUCKETS,
        )
        info = cache_config_labels(settings, engine.pool.num_blocks)
        self.families.gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            [*info, "engine"],
        ).labels(*info.values(), self._engine_label).set(1)
        step.step_observers.append(self)

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

    def sequence_finished(self, sequence: Sequence) -> None:
        reason = sequence.finish_reason or "abort"
        self.success[reason].inc()
        if reason == "abort":
            return
        arrival = sequence.arrival
        scheduled = sequence.scheduled_at if sequence.scheduled_at is not None else arrival
        first = sequence.first_token_at if sequence.first_token_at is not None else scheduled
        finished = sequence.finished_at if sequence.finished_at is not None else time.monotonic()
        last = sequence.last_token_at if sequence.last_token_at is not None else finished
        self.phase["e2e"].observe(finished - arrival)
        self.phase["queue"].observe(scheduled - arrival)
        self.phase["inference"].observe(last - scheduled)
        self.phase["prefill"].observe(first - scheduled)
        self.phase["decode"].observe(last - first)
        self.request_prompt_tokens.observe(sequence.prompt_tokens)
        self.request_generation_tokens.observe(sequence.generated)
        self.request_max_tokens.observe(sequence.max_tokens)


def cache_config_labels(settings: Settings, num_gpu_blocks: int) -> dict[str, str]:
    """The labels of ``vllm:cache_config_info``: vLLM's ``CacheConfig`` fields as text."""
    return {
        "block_size": str(settings.block_size),
        "cache_dtype": "auto",
        "calculate_kv_scales": "False",
        "cpu_offload_gb": "0",
        "enable_prefix_caching": str(settings.enable_prefix_caching),
        "gpu_memory_utilization": "0.9",
        "is_attention_free": "False",
        "num_cpu_blocks": "None",
        "num_gpu_blocks": str(num_gpu_blocks),
        "num_gpu_blocks_override": "None",
        "prefix_caching_hash_algo": str(settings.prefix_caching_hash_algo),
        "sliding_window": "None",
        "swap_space": "4",
        "swap_space_bytes": str(4 * 2**30),
    }
