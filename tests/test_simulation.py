"""Published vLLM serving runs replayed in virtual time (llmsim.simulation)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from llmsim.settings.sources import load_settings
from llmsim.simulation import Simulation, poisson_send_times, summarize
from llmsim.simulation.__main__ import main
from llmsim.simulation.benchmark_run import load_runs, replay
from llmsim.simulation.stats import percentile
from llmsim.simulation.workload import LegacyGamma, Request

SWEEP = Path(__file__).parent / "data" / "llama33_70b_8xa100_sweep.json"
MEDIAN_TOLERANCE, P99_TOLERANCE = 0.15, 0.30


@pytest.fixture(scope="module")
def sweep() -> list[tuple[str, float, dict[str, float]]]:
    settings = load_settings({"profile": "llama-3.3-70b-8xa100", "latency_model": "step"})
    comparisons = replay(settings.settings, load_runs(SWEEP))
    return [(c.run.source, c.run.request_rate, c.errors()) for c in comparisons]


def test_the_sweep_is_replayed_at_every_published_rate(
    sweep: list[tuple[str, float, dict[str, float]]],
) -> None:
    assert [rate for _, rate, _ in sweep] == [1.0, 4.0, 16.0, float("inf")]


@pytest.mark.parametrize("figure", ["median_ttft_ms", "median_tpot_ms"])
def test_the_fitted_profile_reproduces_every_median(
    sweep: list[tuple[str, float, dict[str, float]]], figure: str
) -> None:
    for source, _, errors in sweep:
        assert abs(errors[figure]) <= MEDIAN_TOLERANCE, (source, errors)


def test_the_fitted_profile_reproduces_the_p99s(
    sweep: list[tuple[str, float, dict[str, float]]],
) -> None:
    for source, _, errors in sweep:
        assert abs(errors["p99_tpot_ms"]) <= P99_TOLERANCE, (source, errors)
        assert abs(errors["p99_ttft_ms"]) <= P99_TOLERANCE, (source, errors)


def test_a_later_run_finds_the_earlier_runs_prompts_cached() -> None:
    settings = load_settings(
        {"latency_model": "step", "inter_token_latency": "10ms", "prefill_time_per_token": "1ms"}
    ).settings
    simulation = Simulation(settings)
    requests = [Request("p", 400, 2)]
    [cold] = simulation.run(requests)
    [warm] = simulation.run(requests)
    assert cold.ttft == pytest.approx(0.010 + 0.400)
    assert warm.ttft < 0.05  # 384 of the 400 prompt tokens come from the cache


def test_poisson_send_times_are_the_serving_benchmarks_own() -> None:
    # vLLM's benchmark_serving.py with --seed 0 (np.random.seed(0), then
    # np.random.gamma(shape=1.0, scale=1 / 16) after each request) sends at these times
    times = poisson_send_times(4, 16.0, seed=0)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([0.049742156760194375, 0.07849567268536486, 0.0577014466127543])


def test_legacy_gamma_draws_numpys_numbers_at_any_shape() -> None:
    numpy = pytest.importorskip("numpy")
    for shape in (0.5, 1.0, 2.5):
        draws = LegacyGamma(11)
        numpy.random.seed(11)
        expected = [numpy.random.gamma(shape) for _ in range(500)]
        assert [draws.standard_gamma(shape) for _ in range(500)] == expected


def test_poisson_send_times_have_the_requested_rate() -> None:
    times = poisson_send_times(2000, 4.0, seed=3)
    assert times[0] == 0.0
    assert times == sorted(times)
    assert times[-1] / 1999 == pytest.approx(0.25, rel=0.1)
    assert poisson_send_times(3, float("inf")) == [0.0, 0.0, 0.0]


def test_percentiles_interpolate_like_numpy() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)
    assert percentile([5.0], 99) == 5.0


def test_summary_ignores_single_token_answers_for_tpot() -> None:
    settings = load_settings({"latency_model": "step", "inter_token_latency": "10ms"}).settings
    records = Simulation(settings).run([Request("a", 16, 1), Request("b", 16, 11)])
    summary = summarize(records)
    assert summary.median_tpot == pytest.approx(0.010)
    assert summary.completed == 2


def test_replay_command_prints_published_against_model(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = json.loads(SWEEP.read_text(encoding="utf-8"))["runs"][1]
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run), encoding="utf-8")
    assert main(["replay", str(path), "--profile", "llama-3.3-70b-8xa100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5  # a header and the four figures
    assert lines[1].split()[:3] == ["4/s", "median_ttft_ms", "49.5ms"]


def test_replay_command_rejects_a_file_that_is_not_a_result(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"input_lens": [1, 2]}', encoding="utf-8")
    assert main(["replay", str(path)]) == 2
    assert "not a vLLM serving benchmark result" in capsys.readouterr().err
