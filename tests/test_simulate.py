"""``llmsim simulate``: workloads through simulated instances behind a router, virtual time."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmsim.cli.main import app
from llmsim.proxy.capture import Capture
from llmsim.settings.model import Settings
from llmsim.settings.sources import load_settings
from llmsim.simulation.cluster import Observer, Outcome
from llmsim.simulation.recorder import (
    REQUESTS_CSV_FILE,
    REQUESTS_FILE,
    SUMMARY_FILE,
    TIMESERIES_FILE,
)
from llmsim.simulation.results import SLO, Histogram, SLOError, Stats
from llmsim.simulation.run import Result, Setup, simulate
from llmsim.simulation.search import Grid, SearchError
from llmsim.simulation.stats import percentile
from llmsim.simulation.synthetic import Lengths, Synthetic, WorkloadError
from llmsim.simulation.traces import DatasetWorkload, RecordingWorkload, TraceWorkload

PROFILE = "llama-3.1-8b-a100"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings({"profile": PROFILE, "latency_model": "step"}).settings


def _synthetic(count: int = 60, **fields: object) -> Synthetic:
    base: dict[str, object] = {
        "rate": 20.0,
        "input_len": Lengths.parse("uniform:100:300", "--input-len"),
        "output_len": Lengths.parse("32", "--output-len"),
        "count": count,
    }
    return Synthetic(**{**base, **fields})  # type: ignore[arg-type]


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmsim", "simulate", "-p", PROFILE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_runs_a_workload_and_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _run_cli(
        "--replicas", "2", "--num-requests", "40", "--rate", "20", "--input-len", "200",
        "--output-len", "16", "--slo", "ttft=10s", "--format", "json", "--output", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["overall"]["requests"] == 40
    assert summary["overall"]["good_share"] == 1.0
    assert [row["requests"] for row in summary["instances"]] == [20, 20]
    assert summary["overall"]["output_throughput"] > 0
    lines = (out / REQUESTS_FILE).read_text().splitlines()
    assert len(lines) == 40
    assert {json.loads(line)["output_tokens"] for line in lines} == {16}
    with (out / REQUESTS_CSV_FILE).open(newline="") as table:
        rows = list(csv.DictReader(table))
    assert len(rows) == 40
    for row, line in zip(rows, lines, strict=True):  # the same records, in the same order
        record = json.loads(line)
        assert float(row["ttft_s"]) == record["ttft_s"]
        assert row["meets_slo"] == "true"
        assert row["instance"] == str(record["instance"])
    series = (out / TIMESERIES_FILE).read_text().splitlines()
    assert series[0] == "time_s,instance,running,waiting,kv_usage,preemptions"
    assert {row.split(",")[1] for row in series[1:]} == {"0", "1"}
    assert json.loads((out / SUMMARY_FILE).read_text()) == summary


def test_help_shows_worked_examples() -> None:
    done = CliRunner().invoke(app, ["simulate", "--help"], terminal_width=200)
    assert done.exit_code == 0
    assert "--find max-rate" in done.output
    assert "--router" in done.output


def test_one_seed_gives_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    def files(seed: int, name: str) -> list[bytes]:
        out = tmp_path / name
        args = ["simulate", "-p", PROFILE, "--replicas", "3", "--router", "power-of-two"]
        args += ["--num-requests", "50", "--rate", "30", "--input-len", "normal:300:100"]
        args += ["--seed", str(seed), "--output", str(out), "--format", "json"]
        done = CliRunner().invoke(app, args)
        assert done.exit_code == 0, done.output
        names = (REQUESTS_FILE, REQUESTS_CSV_FILE, TIMESERIES_FILE)
        return [(out / name).read_bytes() for name in names]

    assert files(7, "a") == files(7, "b")
    assert files(7, "a") != files(8, "c")


class _Placements(Observer):
    def __init__(self) -> None:
        self.by_prefix: dict[str, set[int]] = defaultdict(set)

    def finished(self, outcome: Outcome) -> None:
        self.by_prefix[outcome.prefix].add(outcome.instance)


def test_round_robin_spreads_requests_evenly(settings: Settings) -> None:
    result = simulate(Setup(settings, replicas=4, router="round-robin"), _synthetic(40))
    assert [row["requests"] for row in result.instances] == [10, 10, 10, 10]


def test_least_requests_keeps_every_instance_busy(settings: Settings) -> None:
    result = simulate(
        Setup(settings, replicas=3, router="least-requests"), _synthetic(90, rate=200.0)
    )
    assert all(row["requests"] >= 20 for row in result.instances)


def _prefixed(router: str, settings: Settings) -> tuple[Result, _Placements]:
    from llmsim.simulation.cluster import Cluster

    workload = _synthetic(120, rate=30.0, num_prefixes=4, prefix_len=512)
    placements = _Placements()
    cluster = Cluster([settings] * 4, router, seed=1)
    cluster.run(workload.requests(1), placements)
    return simulate(Setup(settings, replicas=4, router=router, seed=1), workload), placements


def test_prefix_affinity_keeps_a_prefix_on_one_instance_and_hits_more(settings: Settings) -> None:
    affinity, placements = _prefixed("prefix-affinity", settings)
    randomly, _ = _prefixed("random", settings)
    assert len(placements.by_prefix) == 4
    assert all(len(instances) == 1 for instances in placements.by_prefix.values())
    assert affinity.overall["prefix_cache_hit_rate"] > randomly.overall["prefix_cache_hit_rate"]


def test_precise_prefix_follows_the_cache_and_hits_at_least_as_often(settings: Settings) -> None:
    precise, placements = _prefixed("precise-prefix", settings)
    randomly, _ = _prefixed("random", settings)
    assert sum(len(instances) for instances in placements.by_prefix.values()) <= 6
    assert precise.overall["prefix_cache_hit_rate"] > randomly.overall["prefix_cache_hit_rate"]


def test_a_later_turn_finds_the_earlier_prompt_and_answer_in_the_cache(
    settings: Settings,
) -> None:
    fixed = Lengths.parse("200", "--input-len")
    single = simulate(Setup(settings), _synthetic(20, input_len=fixed, output_len=fixed))
    multi = simulate(
        Setup(settings),
        _synthetic(20, input_len=fixed, output_len=fixed, turns=3, think_time=0.5, rate=5.0),
    )
    assert single.overall["prefix_cache_hit_rate"] == 0.0
    assert multi.overall["requests"] == 60
    # prompts of 200, 600 and 1000 tokens; the 400 and 800 before them are cached (less the
    # partial last block): 1 200 of 1 800. Without the answers it would be 800 of 1 800.
    assert 0.6 < multi.overall["prefix_cache_hit_rate"] <= 2 / 3


def _outcome(ttft: float, tpot: float, output_tokens: int = 11) -> Outcome:
    first = 1.0 + ttft
    return Outcome(0, "", 100, output_tokens, 0, 1.0, 1.0, first, first + tpot * 10)


def test_slo_goodput_counts_requests_meeting_every_bound() -> None:
    slo = SLO.parse("ttft=500ms,tpot=50ms")
    outcomes = [_outcome(0.2, 0.03), _outcome(0.6, 0.03), _outcome(0.2, 0.06), _outcome(0.5, 0.05)]
    assert [slo.met(o) for o in outcomes] == [True, False, False, True]
    stats = Stats()
    for outcome in outcomes:
        stats.add(outcome, slo.met(outcome))
    figures = stats.figures(duration=4.0)
    assert figures["good_requests"] == 2
    assert figures["good_share"] == 0.5
    assert figures["goodput"] == 0.5  # 2 good requests in 4 seconds
    assert figures["request_throughput"] == 1.0


@pytest.mark.parametrize("text", ["ttft", "ttft=fast", "speed=5ms", "ttft=-1ms"])
def test_a_bad_slo_is_refused(text: str) -> None:
    with pytest.raises(SLOError, match="--slo"):
        SLO.parse(text)


def test_histogram_percentiles_are_within_a_tenth_of_a_percent() -> None:
    values = [0.001 * (1.07**k) for k in range(300)]
    histogram = Histogram()
    for value in values:
        histogram.add(value)
    for q in (50, 90, 99):
        exact = percentile(values, q)
        assert histogram.percentile(q) == pytest.approx(exact, rel=0.08)  # rank rounding
    assert histogram.mean == pytest.approx(sum(values) / len(values))
    same = Histogram()
    for _ in range(9):
        same.add(0.25)
    assert same.percentile(99) == pytest.approx(0.25, rel=0.001)


def test_a_trace_file_is_sent_as_written(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    lines = [
        {"at": 0.0, "prompt_tokens": 300, "output_tokens": 5},
        {"at": 0.5, "prompt": "hello there, how are you", "output_tokens": 3},
        {"at": 0.5, "prompt_tokens": 600, "output_tokens": 2, "prefix": "s", "prefix_tokens": 512},
    ]
    trace.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    requests = list(TraceWorkload(trace).requests(0))
    assert [r.send_at for r in requests] == [0.0, 0.5, 0.5]
    assert [r.output_tokens for r in requests] == [5, 3, 2]
    assert 3 < requests[1].prompt_tokens < 20
    assert (requests[2].prefix, requests[2].prefix_tokens) == ("s", 512)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "line 2: not JSON"),
        ('{"at": 1, "prompt_tokens": 10}', "line 2: missing 'output_tokens'"),
        ('{"at": -1, "prompt_tokens": 10, "output_tokens": 1}', "line 2: 'at' must be"),
        ('{"at": 1, "output_tokens": 4}', "line 2: expected 'prompt_tokens'"),
    ],
)
def test_a_bad_trace_line_is_one_error_line_and_exit_2(
    tmp_path: Path, line: str, reason: str
) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text('{"at": 0, "prompt_tokens": 10, "output_tokens": 2}\n' + line + "\n")
    done = CliRunner().invoke(app, ["simulate", "-p", PROFILE, "--trace", str(trace)])
    assert done.exit_code == 2
    errors = [text for text in done.output.splitlines() if text.strip()]
    assert len(errors) == 1
    assert reason in errors[0]


def test_a_trace_fixes_the_arrivals_so_no_rate_search(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text('{"at": 0, "prompt_tokens": 10, "output_tokens": 2}\n')
    args = ["simulate", "-p", PROFILE, "--trace", str(trace), "--find", "max-rate"]
    done = CliRunner().invoke(app, [*args, "--slo", "ttft=1s"])
    assert done.exit_code == 2
    assert "fix the arrivals" in done.output


def test_a_trace_going_back_in_time_is_refused(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    rows = ['{"at": 2, "prompt_tokens": 10, "output_tokens": 2}']
    rows.append('{"at": 1, "prompt_tokens": 10, "output_tokens": 2}')
    trace.write_text("\n".join(rows))
    with pytest.raises(WorkloadError, match="line 2: 'at' goes back in time"):
        list(TraceWorkload(trace).requests(0))


def test_a_recording_is_replayed_at_its_times_scaled_by_the_speed(tmp_path: Path) -> None:
    recording = tmp_path / "rec.jsonl"
    base = {"endpoint": "chat", "status": 200, "stream": False}
    rows = [
        {**base, "sent_at": 1000.0, "request": {"messages": [{"role": "user", "content": "hi"}]},
         "usage": {"completion_tokens": 7}},
        {**base, "sent_at": 1004.0, "request": {"prompt": "a longer prompt here"},
         "choices": [{"text": "one two three"}]},
    ]  # fmt: skip
    recording.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    requests = list(RecordingWorkload(recording, speed=2.0).requests(0))
    assert [r.send_at for r in requests] == [0.0, 2.0]
    assert requests[0].output_tokens == 7
    assert requests[1].output_tokens >= 3


def test_the_recording_proxy_writes_when_each_request_was_sent() -> None:
    record = Capture().record("chat", {"messages": []}, 200, False)
    assert isinstance(record["sent_at"], float)
    assert record["sent_at"] > 1.7e9


def test_a_dataset_gives_its_prompt_and_answer_lengths(tmp_path: Path) -> None:
    data = tmp_path / "sharegpt.json"
    conversations = [
        {"conversations": [{"from": "human", "value": "word " * 40},
                           {"from": "gpt", "value": "reply " * 10}]},
        {"messages": [{"role": "system", "content": "be brief"},
                      {"role": "user", "content": "hello"},
                      {"role": "assistant", "content": "hi there"}]},
    ]  # fmt: skip
    data.write_text(json.dumps(conversations))
    requests = list(DatasetWorkload(data, rate=5.0, count=10).requests(0))
    assert len(requests) == 2
    assert requests[0].prompt_tokens > requests[1].prompt_tokens
    assert requests[0].output_tokens > requests[1].output_tokens


@pytest.mark.parametrize("text", ["uniform:5", "gauss:1:2", "normal:a:b", "uniform:9:1"])
def test_a_bad_length_distribution_is_refused(text: str) -> None:
    with pytest.raises(WorkloadError, match="--input-len"):
        Lengths.parse(text, "--input-len")


def test_grids_are_geometric_or_linear() -> None:
    assert Grid.parse("rate=1:64:x2").values == (1, 2, 4, 8, 16, 32, 64)
    assert Grid.parse("max-num-seqs=8:24:8") == Grid("max_num_seqs", (8, 16, 24))
    with pytest.raises(SearchError):
        Grid.parse("rate=1:1e9:+0.001")


def test_sweep_and_find_answer_from_several_runs() -> None:
    args = ["simulate", "-p", PROFILE, "--num-requests", "30", "--input-len", "200"]
    args += ["--output-len", "16", "--format", "json"]
    sweep = CliRunner().invoke(app, [*args, "--sweep", "rate=2:8:x2"])
    assert sweep.exit_code == 0, sweep.output
    rows = json.loads(sweep.output)["sweep"]
    assert [row["rate"] for row in rows] == [2, 4, 8]
    found = CliRunner().invoke(app, [*args, "--find", "max-rate", "--slo", "ttft=200ms"])
    assert found.exit_code == 0, found.output
    answer = json.loads(found.output)
    assert answer["max_rate"] >= 1
    assert answer["overall"]["good_share"] >= 0.9


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--rate", "0"], "--rate 0: must be above 0"),
        (["--rate", "inf", "--duration", "10"], "give --num-requests"),
        (["--burstiness", "0"], "--burstiness 0"),
        (["--input-len", "uniform:5"], "--input-len 'uniform:5'"),
        (["--router", "fastest"], "--router 'fastest'"),
        (["--slo", "ttft=soon"], "--slo 'ttft=soon'"),
        (["--find", "max-rate"], "--find needs --slo"),
        (["--sweep", "rate=8:1:x2"], "needs finite START <= STOP"),
    ],
)
def test_bad_options_are_one_error_line_and_exit_2(args: list[str], reason: str) -> None:
    done = CliRunner().invoke(app, ["simulate", "-p", PROFILE, *args])
    assert done.exit_code == 2, done.output
    lines = [line for line in done.output.splitlines() if line.strip()]
    assert len(lines) == 1, done.output
    assert reason in lines[0]


def test_an_output_path_that_is_a_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("")
    args = ["simulate", "-p", PROFILE, "--num-requests", "3", "--output", str(taken)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2
    assert "cannot write to" in done.output


def test_output_has_png_plots_with_matplotlib(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    args = ["simulate", "-p", PROFILE, "--replicas", "2", "--num-requests", "30"]
    done = CliRunner().invoke(app, [*args, "--output", str(tmp_path)])
    assert done.exit_code == 0, done.output
    for name in ("latency_cdf.png", "timeseries.png", "instances.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sweep = CliRunner().invoke(
        app, ["simulate", "-p", PROFILE, "--num-requests", "20", "--sweep", "rate=2:4:x2",
              "--output", str(tmp_path / "sweep")]
    )  # fmt: skip
    assert sweep.exit_code == 0, sweep.output
    assert (tmp_path / "sweep" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads((tmp_path / "sweep" / "sweep.json").read_text())["sweep"]) == 2


def test_without_matplotlib_the_command_says_how_to_get_plots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmsim.simulation import plots

    monkeypatch.setattr(plots, "available", lambda: False)
    args = ["simulate", "-p", PROFILE, "--num-requests", "10", "--output", str(tmp_path)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "pip install 'llmsim[plot]'" in done.output
    assert (tmp_path / REQUESTS_FILE).exists()
    assert not list(tmp_path.glob("*.png"))


def test_a_fleet_file_gives_one_engine_per_instance_and_rank(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        f'[defaults]\nprofile = "{PROFILE}"\n\n[[instance]]\nname = "small"\n\n'
        '[[instance]]\nname = "big"\nprofile = "llama-3.1-70b-4xh100"\ndata_parallel_size = 2\n'
    )
    args = ["simulate", "--fleet", str(fleet), "--num-requests", "30", "--rate", "6"]
    done = CliRunner().invoke(app, [*args, "--format", "json"])
    assert done.exit_code == 0, done.output
    small, *big = json.loads(done.output)["instances"]
    assert [row["requests"] for row in [small, *big]] == [10, 10, 10]
    assert all(row["p50_tpot_s"] > small["p50_tpot_s"] * 1.2 for row in big)
    refused = CliRunner().invoke(app, [*args, "--find", "replicas", "--slo", "ttft=1s"])
    assert refused.exit_code == 2
    assert "--fleet fixes the instances" in refused.output
    swept = CliRunner().invoke(app, [*args, "--sweep", "max_num_seqs=8:16:8"])
    assert swept.exit_code == 2
    assert "--fleet fixes the instances" in swept.output


def test_cost_per_million_output_tokens() -> None:
    from llmsim.simulation.run import cost_figures

    stats = Stats(output_tokens=500_000)
    figures = cost_figures([3.0] * 4, duration=1800.0, overall=stats)
    assert figures["cost"] == pytest.approx(6.0)  # 4 instances x half an hour x 3 per hour
    assert figures["cost_per_million_output_tokens"] == pytest.approx(12.0)
    assert cost_figures([3.0], 60.0, Stats())["cost_per_million_output_tokens"] == 0.0


def test_the_cost_option_adds_the_cost_figures() -> None:
    args = ["simulate", "-p", PROFILE, "--num-requests", "10", "--cost-per-hour", "2"]
    done = CliRunner().invoke(app, [*args, "--format", "json"])
    assert done.exit_code == 0, done.output
    overall = json.loads(done.output)["overall"]
    expected = 2 * overall["duration_s"] / 3600 / overall["output_tokens"] * 1e6
    assert overall["cost_per_million_output_tokens"] == pytest.approx(expected)


def test_a_fleet_costs_each_pool_its_own_price(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        f'[defaults]\nprofile = "{PROFILE}"\n\n[[instance]]\nname = "cheap"\n\n'
        '[[instance]]\nname = "dear"\ndata_parallel_size = 2\ncost_per_hour = 4.5\n'
    )
    args = ["simulate", "--fleet", str(fleet), "--num-requests", "12", "--format", "json"]
    unpriced = CliRunner().invoke(app, args)
    assert unpriced.exit_code == 2
    assert "1 of 3 instances have no cost_per_hour" in unpriced.output
    done = CliRunner().invoke(app, [*args, "--cost-per-hour", "1"])
    assert done.exit_code == 0, done.output
    overall = json.loads(done.output)["overall"]
    hours = overall["duration_s"] / 3600
    assert overall["cost"] == pytest.approx((1 + 4.5 + 4.5) * hours)  # summed over the pools
    expected = overall["cost"] / overall["output_tokens"] * 1e6
    assert overall["cost_per_million_output_tokens"] == pytest.approx(expected)


def test_progress_is_reported_as_requests_finish(settings: Settings) -> None:
    ticks: list[int] = []
    simulate(Setup(settings, progress=ticks.append), _synthetic(120))
    assert ticks == [50, 100]


def test_a_terminal_gets_a_progress_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from llmsim.cli import simulate as command

    screen = io.StringIO()
    monkeypatch.setattr(command, "err", Console(file=screen, force_terminal=True, width=80))
    done = CliRunner().invoke(app, ["simulate", "-p", PROFILE, "--num-requests", "120"])
    assert done.exit_code == 0, done.output
    assert "simulating" in screen.getvalue()
    assert "simulating" not in done.output


def test_pd_prefills_on_one_pool_and_decodes_after_the_transfer_on_the_other() -> None:
    def run(transfer: str) -> dict[str, object]:
        args = ["simulate", "-p", PROFILE, "--replicas", "2", "--prefill-replicas", "1"]
        args += ["--num-requests", "40", "--rate", "4", "--input-len", "500"]
        args += ["--set", f"kv_cache_transfer_latency={transfer}", "--format", "json"]
        done = CliRunner().invoke(app, args)
        assert done.exit_code == 0, done.output
        return json.loads(done.output)  # type: ignore[no-any-return]

    slow, fast = run("200ms"), run("0ms")
    rows = slow["instances"]
    assert isinstance(rows, list)
    assert [(r["name"], r["requests"], r["prefills"]) for r in rows] == [
        ("decode 0", 20, 0),
        ("decode 1", 20, 0),
        ("prefill 0", 0, 40),
    ]
    slow_ttft = slow["overall"]["p50_ttft_s"]  # type: ignore[index]
    fast_ttft = fast["overall"]["p50_ttft_s"]  # type: ignore[index]
    assert slow_ttft - fast_ttft == pytest.approx(0.2, rel=0.1)
