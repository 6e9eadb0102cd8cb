"""What a server's engines share: one Prometheus registry, vLLM's families and gauges.

Counters and histograms are :class:`~llmsim.observability.metric_types.FastFamily` objects
(plain Python numbers, exported at scrape time); the gauges are prometheus-client's, read
when scraped.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from llmsim.observability.metric_types import FastCollector, FastFamily
from llmsim.observability.vllm_series import BY_NAME, buckets_of, exported
from llmsim.settings.model import Settings


def fast_families(settings: Settings) -> dict[str, FastFamily]:
    """A family for every counter and histogram of :func:`exported`, keyed by name."""
    return {
        series.name: FastFamily(
            series.name,
            series.help,
            series.labels,
            None
            if series.kind == "counter"
            else buckets_of(series, settings.max_model_len, settings.custom_histogram_buckets),
        )
        for series in exported()
        if series.kind != "gauge"
    }


class SharedRegistry:
    """What a server's engines share: one registry, its families and its gauges."""

    def __init__(self, settings: Settings) -> None:
        self._custom = settings.custom_histogram_buckets
        self.registry = reg = CollectorRegistry()
        self.fast = fast = FastCollector()
        self.families = {name: fast.add(family) for name, family in fast_families(settings).items()}
        reg.register(fast)

        def gauge(name: str) -> Gauge:
            series = BY_NAME[name]
            return Gauge(name, series.help, series.labels, registry=reg)

        self.gauges = {
            name: gauge(name)
            for name in (
                "vllm:num_requests_running",
                "vllm:num_requests_waiting",
                "vllm:kv_cache_usage_perc",
                "vllm:num_requests_waiting_by_reason",
                "vllm:lora_requests_info",
                "vllm:cache_config_info",
            )
        }
        transfer = settings.kv_transfer_config
        if transfer is not None and transfer.consumes:  # vLLM registers it on a consumer only
            name = "vllm:num_requests_kv_fetch_by_stage"
            self.gauges[name] = gauge(name)

    def family(self, name: str) -> FastFamily:
        """The family ``name`` (added on first use for the optional residency series)."""
        family = self.families.get(name)
        if family is None:
            series = BY_NAME[name]
            bounds = buckets_of(series, 0, self._custom)
            family = FastFamily(name, series.help, series.labels, bounds)
            self.families[name] = family = self.fast.add(family)
        return family
