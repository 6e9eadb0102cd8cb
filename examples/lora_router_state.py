#!/usr/bin/env python3
"""Read what a LoRA-aware router reads from each replica, and pick one for an adapter.

For every replica URL it scrapes ``/metrics`` and prints the queue, the KV-cache estimate and
the LoRA state from ``vllm:lora_requests_info`` (the series with the largest value is the
current one). With ``--adapter NAME`` it also prints the replica a simple affinity policy would
choose: one where the adapter already runs with nothing waiting, else one with a free LoRA slot,
else the shortest queue. Use it to check by hand what your router should see, or as a starting
point for assertions in router tests.

Usage::

    python examples/lora_router_state.py http://127.0.0.1:8001 http://127.0.0.1:8002 \\
        --adapter sql-lora

Works against llmsim and vLLM alike. Standard library plus prometheus-client.
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class ReplicaState:
    url: str
    running: float
    waiting: float
    kv_cache_usage: float
    max_lora: int
    running_adapters: tuple[str, ...]
    waiting_adapters: tuple[str, ...]

    @property
    def free_lora_slots(self) -> int:
        return max(0, self.max_lora - len(self.running_adapters))


def _names(label: str) -> tuple[str, ...]:
    return tuple(name for name in label.split(",") if name)


def parse_state(url: str, exposition: str) -> ReplicaState:
    """The router-relevant state of one replica from its Prometheus text exposition."""
    values: dict[str, float] = {}
    lora_labels: dict[str, str] = {}
    lora_time = float("-inf")
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "vllm:lora_requests_info" and sample.value > lora_time:
                lora_time, lora_labels = sample.value, dict(sample.labels)
            elif sample.name.startswith("vllm:"):
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return ReplicaState(
        url=url,
        running=values.get("vllm:num_requests_running", 0.0),
        waiting=values.get("vllm:num_requests_waiting", 0.0),
        kv_cache_usage=values.get("vllm:kv_cache_usage_perc", 0.0),
        max_lora=int(lora_labels.get("max_lora", "0") or 0),
        running_adapters=_names(lora_labels.get("running_lora_adapters", "")),
        waiting_adapters=_names(lora_labels.get("waiting_lora_adapters", "")),
    )


def scrape(url: str, timeout: float) -> ReplicaState:
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as response:
        return parse_state(url, response.read().decode())


def pick(replicas: Sequence[ReplicaState], adapter: str) -> ReplicaState:
    """Affinity first, then a free slot, then the shortest queue; ties by fewest running."""

    def rank(state: ReplicaState) -> tuple[int, float, float]:
        if adapter in state.running_adapters and adapter not in state.waiting_adapters:
            tier = 0
        elif state.free_lora_slots > 0:
            tier = 1
        else:
            tier = 2
        return tier, state.waiting, state.running

    return min(replicas, key=rank)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("replicas", nargs="+", help="base URLs, e.g. http://127.0.0.1:8001")
    parser.add_argument("--adapter", help="print the replica to route this adapter to")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per scrape")
    args = parser.parse_args(argv)
    try:
        states = [scrape(url, args.timeout) for url in args.replicas]
    except OSError as exc:
        print(f"error: cannot scrape: {exc}", file=sys.stderr)
        return 1
    for state in states:
        print(
            f"{state.url}  running={state.running:g} waiting={state.waiting:g} "
            f"kv={state.kv_cache_usage:.4f} slots={len(state.running_adapters)}/{state.max_lora} "
            f"running_adapters={','.join(state.running_adapters) or '-'} "
            f"waiting_adapters={','.join(state.waiting_adapters) or '-'}"
        )
    if args.adapter:
        print(f"route {args.adapter} -> {pick(states, args.adapter).url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
