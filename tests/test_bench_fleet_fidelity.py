"""The fidelity benchmark's calibration: what it subtracts from a live TTFT is exactly the
step the simulation models, and what it measures is the live stack's own time, not a step."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fleet_fidelity as fidelity

from llmsim.pool.fleet import load_fleet
from llmsim.settings.model import Settings
from llmsim.simulation.workload import Request


def fleet(directory: Path) -> tuple[Settings, ...]:
    plan = load_fleet(fidelity.fleet_file(directory, 2))
    return tuple(instance.settings for instance in plan.instances)


def test_an_idle_simulated_instance_answers_in_the_modelled_step_plus_the_front_end(
    tmp_path: Path,
) -> None:
    settings = fleet(tmp_path)
    requests = [Request("a", 64, 1, send_at=0.0), Request("b", 200, 8, send_at=1.0)]
    for extra in (0.0, 0.0013):
        shifted = tuple(s.model_copy(update={"frontend_latency": extra}) for s in settings)
        _, times, _ = fidelity.simulated(shifted, requests, tmp_path / f"sim-{extra}")
        expected = [fidelity.modelled_ttft(settings[0], r.prompt_tokens) + extra for r in requests]
        assert [t.ttft for t in times] == pytest.approx(expected, abs=1e-9)


async def test_calibration_measures_the_stack_not_the_step(  # type: ignore[no-untyped-def]
    aiohttp_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmsim.api import create_app

    monkeypatch.setattr(fidelity, "CALIBRATION_PAUSE", 0.005)
    settings = fleet(tmp_path)[0]
    server = await aiohttp_server(create_app(settings))
    median, low, high = await fidelity.overhead([server.port], settings, count=5)
    assert 0.0 <= low <= median <= high
    assert median < settings.inter_token_latency  # a step's time is not the stack's
