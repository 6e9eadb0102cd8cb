"""LoRA adapters in a simulated fleet: requests go to instances serving their adapter, and
each instance's slots and load time hold them back as the live request scheduler does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from llmsim.cli.main import app
from llmsim.settings.model import Settings
from llmsim.settings.sources import load_settings
from llmsim.simulation.cluster import Cluster, Observer, Outcome
from llmsim.simulation.workload import Request

PROFILE = "llama-3.1-8b-a100"


def _settings(**extra: Any) -> Settings:
    return load_settings({"profile": PROFILE, "latency_model": "step", **extra}).settings


class _Outcomes(Observer):
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def finished(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


def _run(cluster: Cluster, requests: list[Request]) -> list[Outcome]:
    seen = _Outcomes()
    cluster.run(requests, seen)
    return sorted(seen.outcomes, key=lambda outcome: outcome.sent)


def test_requests_naming_an_adapter_go_to_the_instances_serving_it() -> None:
    cluster = Cluster([_settings(), _settings(lora="x")], "round-robin")
    requests = [
        Request(f"p{k}", 100, 4, 0.01 * k, adapter="x" if k % 2 else None) for k in range(20)
    ]
    outcomes = _run(cluster, requests)
    assert {outcome.instance for outcome in outcomes[1::2]} == {1}  # the adapter's requests
    assert 0 in {outcome.instance for outcome in outcomes[::2]}  # the others go anywhere


def test_one_slot_serialises_two_adapters_and_each_switch_loads() -> None:
    def run(max_loras: int) -> list[Outcome]:
        settings = _settings(lora="x,y", max_loras=max_loras, lora_load_latency="500ms")
        requests = [
            Request("a", 100, 20, 0.0, adapter="x"),
            Request("b", 100, 20, 0.0, adapter="y"),
        ]
        return _run(Cluster([settings], "round-robin"), requests)

    x, y = run(2)  # two slots, both adapters warm in the CPU cache: one batch, no load
    assert x.ttft < 0.1
    assert y.ttft == pytest.approx(x.ttft)
    x, y = run(1)  # one slot and one warm adapter (y, registered last): every switch loads
    assert 0.5 < x.ttft < 0.6
    assert y.ttft > x.e2e + 0.5  # y waits for x to finish and free the slot, then loads
    assert y.queue > x.e2e


def test_the_command_sends_adapters_and_refuses_one_nobody_serves(tmp_path: Path) -> None:
    args = ["simulate", "-p", PROFILE, "--num-requests", "20", "--rate", "10", "--adapters", "x,y"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2
    assert "no instance serves the LoRA adapter" in refused.output
    out = tmp_path / "out"
    done = CliRunner().invoke(
        app, [*args, "--set", "lora=x,y", "--format", "json", "--output", str(out)]
    )
    assert done.exit_code == 0, done.output
    records = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert {record["adapter"] for record in records} == {"x", "y"}


def test_a_trace_line_names_its_adapter(tmp_path: Path) -> None:
    from llmsim.simulation.traces import trace_requests

    trace = tmp_path / "trace.jsonl"
    trace.write_text(
        '{"at": 0, "prompt_tokens": 10, "output_tokens": 2, "adapter": "x"}\n'
        '{"at": 1, "prompt_tokens": 10, "output_tokens": 2}\n'
    )
    assert [request.adapter for request in trace_requests(trace)] == ["x", None]
    trace.write_text('{"at": 0, "prompt_tokens": 10, "output_tokens": 2, "adapter": 3}\n')
    with pytest.raises(ValueError, match="adapter"):
        list(trace_requests(trace))
