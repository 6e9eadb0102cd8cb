"""What a step costs and what a request waits before the engine, in virtual time, and the
front-end latency seen from a real ``llmsim serve --latency-model step``."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from llmsim.engine.step import StepCosts, StepEngine, VirtualRun, virtual_sequence
from llmsim.engine.step.costs import FrontEnd

if TYPE_CHECKING:
    from conftest import RunningServer

ITL, DECODE, PREFILL, CONTEXT = 0.02, 0.001, 0.0002, 0.000001
COSTS = StepCosts(
    inter_token_latency=ITL,
    decode_time_per_sequence=DECODE,
    prefill_time_per_token=PREFILL,
    context_time_per_token=CONTEXT,
)


def _decoding(run: VirtualRun, count: int, prompt: int = 32, output: int = 50) -> None:
    """``count`` streams that have finished their prefill and decode from now on."""
    for k in range(count):
        run.arrive(virtual_sequence(f"d{k}", prompt, output), at=0.0)
    run.step()  # one step prefills them all


def test_a_mixed_step_costs_the_formula() -> None:
    run = VirtualRun(StepEngine(num_blocks=1024, costs=COSTS))
    _decoding(run, 6)
    run.arrive(virtual_sequence("new", 300, 5), at=run.now)
    plan = run.step()
    assert (plan.decode, plan.prefill_tokens) == (6, 300)
    expected = ITL + 5 * DECODE + 300 * PREFILL + plan.context_tokens * CONTEXT
    assert run.samples[-1].duration == pytest.approx(expected)


def test_an_arrival_lengthens_a_step_by_its_own_tokens_compute_only() -> None:
    """The same batch with and without a 40-token prompt joining: the difference is 40
    prompt tokens of compute, nothing fixed."""
    durations = []
    for joining in (False, True):
        run = VirtualRun(StepEngine(num_blocks=1024, costs=COSTS))
        _decoding(run, 4)
        if joining:
            run.arrive(virtual_sequence("new", 40, 5), at=run.now)
        run.step()
        durations.append(run.samples[-1].duration)
    assert durations[1] - durations[0] == pytest.approx(40 * PREFILL)


def test_the_front_end_latency_delays_only_its_own_request() -> None:
    frontend = 0.5
    costs = StepCosts(inter_token_latency=ITL, frontend_latency=frontend)
    run = VirtualRun(StepEngine(num_blocks=1024, costs=costs))
    early = virtual_sequence("early", 16, 40)
    late = virtual_sequence("late", 16, 3)
    run.arrive(early, at=0.0)
    run.arrive(late, at=0.1)
    run.until_idle()
    # every step of the running stream keeps its length: 40 tokens, 40 steps of one ITL
    assert {round(sample.duration, 9) for sample in run.samples} == {ITL}
    assert early.first_token_at == pytest.approx(frontend + ITL)
    assert early.last_token_at == pytest.approx(frontend + 40 * ITL)
    # the late request joins the first step that starts after its own front end
    assert late.first_token_at is not None
    assert 0.1 + frontend + ITL <= late.first_token_at <= 0.1 + frontend + 2 * ITL + 1e-9


def test_a_burst_passes_the_front_ends_serial_part_one_at_a_time() -> None:
    costs = StepCosts(frontend_latency=0.01, frontend_serial_time=0.002)
    frontend = FrontEnd()
    entries = [frontend.entry(0.0, costs) for _ in range(5)]
    assert entries == pytest.approx([0.012, 0.014, 0.016, 0.018, 0.020])
    assert frontend.entry(1.0, costs) == pytest.approx(1.012)  # an idle front end: no wait


def test_a_request_waits_behind_the_streams_the_front_end_serves() -> None:
    """The front end's load delay: per request running when it would reach the engine,
    counted for that request only (the running batch's steps keep their length)."""
    per_running = 0.005
    costs = StepCosts(inter_token_latency=ITL, frontend_time_per_running_request=per_running)
    assert FrontEnd.load_delay(4, costs) == pytest.approx(4 * per_running)
    run = VirtualRun(StepEngine(num_blocks=1024, costs=costs))
    _decoding(run, 4)
    late = virtual_sequence("late", 16, 3)
    run.arrive(late, at=run.now)
    run.until_idle()
    assert late.first_token_at is not None
    reaches = ITL + 4 * per_running  # the step it arrived at, then the wait behind 4 streams
    assert reaches + ITL <= late.first_token_at <= reaches + 2 * ITL + 1e-9
    assert {round(sample.duration, 9) for sample in run.samples} == {ITL}


def _first_token_after(server: RunningServer) -> float:
    body = json.dumps({"prompt": "hi", "max_tokens": 1, "ignore_eos": True}).encode()
    request = urllib.request.Request(
        server.api_url + "/completions", body, {"Content-Type": "application/json"}
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=30) as response:
        json.load(response)
    return time.monotonic() - started


def test_serve_applies_the_front_end_latency_per_request(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server(
        "--latency-model", "step", "--frontend-latency", "300ms",
        "--inter-token-latency", "5ms", "--no-dashboard",
    )  # fmt: skip
    elapsed = min(_first_token_after(server) for _ in range(2))
    assert 0.3 <= elapsed < 1.5
