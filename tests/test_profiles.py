"""Named profiles (file and built-in), ``llmsim profiles`` and the per-token latency model."""

from __future__ import annotations

import json
import os
import random
import re
import time
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from llmsim.cli.main import app
from llmsim.engine.timing import LatencyModel, LatencyProfile
from llmsim.settings.profiles import builtin_profiles
from llmsim.settings.sources import ConfigError, load_settings

if TYPE_CHECKING:
    from conftest import RunningServer

PROFILE_FILE = """
model = "top-level-model"
inter_token_latency = "5ms"
max_loras = 3

[profiles.slow]
description = "A busy deployment"
inter_token_latency = "40ms"
time_to_first_token = "300ms"
max_running_requests = 4

[profiles."llama-3.1-8b-h100"]
description = "A file profile hides the built-in one of the same name"
model = "my-own-8b"
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("LLMSIM_"):
            monkeypatch.delenv(key)


@pytest.fixture
def profile_file(tmp_path: Path) -> Path:
    path = tmp_path / "profiles.toml"
    path.write_text(PROFILE_FILE, encoding="utf-8")
    return path


# -- layering -----------------------------------------------------------------------


def test_profile_sits_between_environment_and_file_top_level(
    profile_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSIM_MAX_RUNNING_REQUESTS", "9")
    loaded = load_settings(
        {"config": str(profile_file), "profile": "slow", "time_to_first_token": "50ms"}
    )
    settings = loaded.settings
    assert settings.time_to_first_token == pytest.approx(0.05)  # flag beats profile
    assert settings.max_running_requests == 9  # environment beats profile
    assert settings.inter_token_latency == pytest.approx(0.04)  # profile beats top level
    assert settings.model == "top-level-model"  # top level fills what the profile lacks
    assert settings.max_loras == 3
    assert settings.mode == "random"  # default
    assert loaded.sources["time_to_first_token"] == "flag"
    assert loaded.sources["max_running_requests"] == "env"
    assert loaded.sources["inter_token_latency"] == "profile"
    assert loaded.sources["model"] == "file"
    assert loaded.describe_source("inter_token_latency") == f"profile slow ({profile_file})"


def test_profile_can_come_from_the_environment(
    profile_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSIM_CONFIG", str(profile_file))
    monkeypatch.setenv("LLMSIM_PROFILE", "slow")
    assert load_settings({}).settings.max_running_requests == 4


def test_without_profile_the_tables_are_ignored(profile_file: Path) -> None:
    settings = load_settings({"config": str(profile_file)}).settings
    assert settings.inter_token_latency == pytest.approx(0.005)
    assert settings.max_running_requests == 256


def test_file_profile_hides_the_builtin_of_the_same_name(profile_file: Path) -> None:
    from_file = load_settings({"config": str(profile_file), "profile": "llama-3.1-8b-h100"})
    builtin = load_settings({"profile": "llama-3.1-8b-h100"})
    assert from_file.settings.model == "my-own-8b"
    assert builtin.settings.model != "my-own-8b"
    assert builtin.describe_source("model") == "profile llama-3.1-8b-h100 (built-in)"


def test_unknown_profile_lists_the_available_ones(profile_file: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"config": str(profile_file), "profile": "fast"})
    [line] = info.value.lines
    assert "unknown profile 'fast'" in line
    assert "slow" in line
    assert "llama-3.1-70b-8xh100" in line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[profiles.a]\nbogus = 1\n", "unknown key 'bogus' in profile 'a'"),
        ("[profiles.a]\nconfig = 'x.toml'\n", "unknown key 'config' in profile 'a'"),
        ("[profiles.llama-3.1]\nmodel = 'x'\n", "must be quoted"),
        ("profiles = 3\n", "'profiles' must be a table"),
        ("profile = 'slow'\n", "unknown key 'profile'"),
    ],
)
def test_malformed_profile_tables_are_rejected(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings({"config": str(path)})
    assert any(message in line for line in info.value.lines), info.value.lines


def test_invalid_profile_value_names_the_profile(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[profiles.x]\nmax_loras = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings({"config": str(path), "profile": "x"})
    [line] = info.value.lines
    assert line.startswith(f"max_loras in {path}, profile 'x':"), line


# -- built-in profiles ----------------------------------------------------------------


def test_builtin_profiles_cover_common_model_and_gpu_pairs() -> None:
    names = set(builtin_profiles())
    assert {"llama-3.1-8b-h100", "llama-3.1-70b-8xh100"} <= names
    assert any("l40s" in name for name in names)


@pytest.mark.parametrize("name", sorted(builtin_profiles()))
def test_every_builtin_profile_is_valid_and_realistic(name: str) -> None:
    profile = builtin_profiles()[name]
    settings = load_settings({"profile": name}).settings
    assert profile.description
    assert settings.latency_model == "per-token"
    assert 0 < settings.inter_token_latency < 0.2
    assert 0 < settings.prefill_time_per_token < 0.01
    assert settings.model != "llmsim/sim-model"


def test_every_builtin_profile_cites_its_sources() -> None:
    text = resources.files("llmsim.settings").joinpath("builtin_profiles.toml").read_text("utf-8")
    blocks = re.split(r"^\[profiles\.", text, flags=re.MULTILINE)[1:]
    assert len(blocks) == len(builtin_profiles())
    for block in blocks:
        name = block.split("]", 1)[0]
        assert re.search(r"#.*https?://", block), f"{name} cites no source"


# -- llmsim profiles ------------------------------------------------------------------


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250", "NO_COLOR": "1"})


def test_profiles_list_shows_builtin_and_file_profiles(profile_file: Path) -> None:
    result = _run("profiles", "list", "--config", str(profile_file))
    assert result.exit_code == 0, result.output
    for name in [*builtin_profiles(), "slow"]:
        assert name in result.output
    assert "A busy deployment" in result.output
    assert "300ms" in result.output


def test_profiles_show_prints_the_values(profile_file: Path) -> None:
    result = _run("profiles", "show", "slow", "--config", str(profile_file))
    assert result.exit_code == 0, result.output
    assert re.search(r"inter_token_latency\s*│\s*40ms", result.output), result.output
    assert "A busy deployment" in result.output


def test_profiles_show_unknown_name_exits_2() -> None:
    result = _run("profiles", "show", "no-such-profile")
    assert result.exit_code == 2
    assert "unknown profile 'no-such-profile'" in result.output


def test_config_show_reports_the_profile_as_source(profile_file: Path) -> None:
    result = _run("config", "show", "--config", str(profile_file), "--profile", "slow")
    assert result.exit_code == 0, result.output
    assert re.search(r"max_running_requests\s*│\s*4\s*│\s*profile slow", result.output)


# -- the per-token latency model ---------------------------------------------------------


def test_per_token_model_grows_with_the_prompt() -> None:
    profile = LatencyProfile(
        latency_model="per-token",
        frontend_latency=0.02,
        inter_token_latency=0.005,
        prefill_time_per_token=0.001,
    )
    model = LatencyModel(profile, random.Random(0))
    assert model.first_token_delay(0, 1.0) == pytest.approx(0.025)  # front end + one step
    assert model.first_token_delay(100, 1.0) == pytest.approx(0.125)
    assert model.first_token_delay(100, 2.0) == pytest.approx(0.25)


def test_constant_model_ignores_the_prompt_and_the_prefill_knobs() -> None:
    profile = LatencyProfile(time_to_first_token=0.2, prefill_time_per_token=0.001)
    model = LatencyModel(profile, random.Random(0))
    assert model.first_token_delay(0, 1.0) == model.first_token_delay(5000, 1.0) == 0.2


def test_per_token_jitter_is_not_bound_to_time_to_first_token() -> None:
    settings = load_settings(
        {
            "latency_model": "per-token",
            "frontend_latency": "10ms",
            "time_to_first_token_std_dev": "3ms",
        }
    ).settings
    assert settings.time_to_first_token_std_dev == pytest.approx(0.003)
    with pytest.raises(ConfigError, match="at most 30%"):
        load_settings({"time_to_first_token_std_dev": "3ms"})


def _ttft(server: RunningServer, prompt: str) -> float:
    body = json.dumps({"prompt": prompt, "max_tokens": 1, "ignore_eos": True}).encode()
    request = urllib.request.Request(
        server.api_url + "/completions", body, {"Content-Type": "application/json"}
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=30) as response:
        usage = json.load(response)["usage"]
    elapsed = time.monotonic() - started
    assert usage["completion_tokens"] == 1
    return elapsed


def test_long_prompts_wait_longer_for_the_first_token(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server(
        "--latency-model", "per-token", "--frontend-latency", "30ms",
        "--prefill-time-per-token", "2ms",
    )  # fmt: skip
    short = min(_ttft(server, "hi") for _ in range(3))
    long = min(_ttft(server, "word " * 300) for _ in range(3))
    assert 0.03 <= short < 0.3
    assert long >= 0.03 + 0.002 * 250  # at least 250 prompt tokens of prefill
    assert long > 3 * short


def test_serve_with_a_builtin_profile(llmsim_server: Callable[..., RunningServer]) -> None:
    server = llmsim_server("--profile", "llama-3.1-8b-h100")
    with urllib.request.urlopen(server.api_url + "/models", timeout=10) as response:
        models = json.load(response)
    expected = load_settings({"profile": "llama-3.1-8b-h100"}).settings.model
    assert [card["id"] for card in models["data"]] == [expected]
    assert "profile" in server.log()
    assert "llama-3.1-8b-h100" in server.log()


def test_latency_model_can_be_switched_at_run_time() -> None:
    from llmsim.engine import Engine
    from llmsim.observability.metrics import Metrics
    from llmsim.runtime.adjustable import Runtime

    settings = load_settings({"time_to_first_token": "100ms"}).settings
    metrics = Metrics(settings)
    engine = Engine(settings, observer=metrics)
    runtime = Runtime(settings, engine, metrics)
    assert engine.latency.mean_first_token_delay(1000) == pytest.approx(0.1)
    changed = runtime.update(
        {"latency_model": "per-token", "prefill_overhead": "10ms", "prefill_time_per_token": 1}
    )  # the old name of frontend_latency is still accepted
    assert set(changed) == {"latency_model", "frontend_latency", "prefill_time_per_token"}
    assert engine.latency.mean_first_token_delay(1000) == pytest.approx(1.01)


def test_profiles_show_prints_the_step_model_predictions() -> None:
    result = _run("profiles", "show", "llama-3.1-8b-h100")
    assert result.exit_code == 0, result.output
    assert "predicted with --latency-model step" in result.output
    itl = {
        int(batch): float(value)
        for batch, value in re.findall(r"ITL at batch (\d+)\s*│\s*([\d.]+) ms", result.output)
    }
    assert sorted(itl) == [1, 16, 64, 256]
    assert itl[1] == pytest.approx(7.2, abs=0.2)  # the published single-stream ITL
    assert itl[1] < itl[16] < itl[64] < itl[256]
    ttft = re.findall(r"TTFT, ([\d,]+)-token prompt\s*│\s*([\d.,]+) ms", result.output)
    assert [prompt for prompt, _ in ttft] == ["128", "1,024", "8,192"]
    assert "peak decode tokens/s" in result.output


@pytest.mark.parametrize("name", sorted(builtin_profiles()))
def test_every_builtin_profile_runs_the_step_model(name: str) -> None:
    settings = load_settings({"profile": name, "latency_model": "step"}).settings
    assert settings.decode_time_per_sequence > 0
    assert settings.context_time_per_token > 0
    assert settings.kv_cache_size >= settings.max_model_len


# -- the step model against published figures -----------------------------------------

A100_70B = "https://github.com/surajssd/llm-k8s/blob/benchmarking/results_serving_meta-llama-Llama-3.3-70B-Instruct/01_tp8_pp1/"
STEP_TOLERANCE = 0.15
"""The step model's ITL and TPOT stay within 15% of each published figure below."""

PUBLISHED_ITL = [
    # (profile, decoding sequences, context tokens per sequence, published ms, source)
    ("llama-3.1-8b-h100", 1, 400, 7.18, "hungchun0201/agentic-ai-survey week-01, p50 ITL"),
    ("llama-3.1-8b-a100", 1, 300, 12.0, "LambdaLabsML prompt_10 1xA100, median TPOT"),
    ("llama-3.1-8b-l40s", 1, 400, 23.47, "hungchun0201/agentic-ai-survey week-01, p50 ITL"),
    ("llama-3.1-70b-8xh100", 1, 300, 12.18, "LambdaLabsML prompt_10 8xH100, median TPOT"),
    ("llama-3.1-70b-4xh100", 1, 300, 18.1, "LambdaLabsML prompt_10 4xH100, median TPOT"),
    ("llama-3.3-70b-8xa100", 1, 400, 24.31, A100_70B + "..._sharegpt_qps_01.json, median ITL"),
    # 200 ShareGPT requests at once (..._sharegpt_qps_inf.json): the run's median ITL, and the
    # median gap of the tokens emitted while 16-31, 32-63 and 128-255 sequences were decoding
    # (from its per-request TTFTs and ITLs; mean batch and context of each group)
    ("llama-3.3-70b-8xa100", 93, 327, 35.05, A100_70B + "..._sharegpt_qps_inf.json"),
    ("llama-3.3-70b-8xa100", 24, 671, 27.72, A100_70B + "..._sharegpt_qps_inf.json"),
    ("llama-3.3-70b-8xa100", 50, 551, 28.60, A100_70B + "..._sharegpt_qps_inf.json"),
    ("llama-3.3-70b-8xa100", 149, 201, 38.58, A100_70B + "..._sharegpt_qps_inf.json"),
]


@pytest.mark.parametrize(("name", "batch", "context", "published_ms", "source"), PUBLISHED_ITL)
def test_step_model_reproduces_published_itl(
    name: str, batch: int, context: int, published_ms: float, source: str
) -> None:
    from llmsim.engine.step.costs import StepCosts
    from llmsim.engine.step.predict import decode_itl

    settings = load_settings({"profile": name}).settings
    predicted = decode_itl(StepCosts.from_settings(settings), batch, context) * 1000
    assert predicted == pytest.approx(published_ms, rel=STEP_TOLERANCE), source


def _median_tpot(name: str, input_lens: list[int], output_lens: list[int]) -> float:
    """Replay a burst of requests (all sent at once) in virtual time: vLLM's median TPOT."""
    from llmsim.simulation import Request, Simulation, summarize

    settings = load_settings({"profile": name, "latency_model": "step"}).settings
    requests = [
        Request(f"r{k}", prompt, output)
        for k, (prompt, output) in enumerate(zip(input_lens, output_lens, strict=True))
        if prompt > 0 and output > 1
    ]
    return summarize(Simulation(settings).run(requests)).median_tpot


SHAREGPT_160 = json.loads(
    (Path(__file__).parent / "data" / "sharegpt_160_runs.json").read_text(encoding="utf-8")
)


@pytest.mark.parametrize("name", sorted(SHAREGPT_160["runs"]))
def test_step_model_reproduces_published_tpot_under_load(name: str) -> None:
    run = SHAREGPT_160["runs"][name]
    predicted = _median_tpot(name, SHAREGPT_160["input_lens"], run["output_lens"]) * 1000
    assert predicted == pytest.approx(run["median_tpot_ms"], rel=STEP_TOLERANCE), run["source"]


# -- renamed settings ---------------------------------------------------------------------


def test_prefill_overhead_in_a_profile_loads_as_frontend_latency(tmp_path: Path) -> None:
    path = tmp_path / "old.toml"
    path.write_text('[profiles.old]\nprefill_overhead = "30ms"\n', encoding="utf-8")
    loaded = load_settings({"config": str(path), "profile": "old"})
    assert loaded.settings.frontend_latency == pytest.approx(0.03)
    assert loaded.sources["frontend_latency"] == "profile"
    [notice] = loaded.notices
    assert notice.startswith("profile old: prefill_overhead is now frontend_latency (")


def test_prefill_overhead_from_a_flag_or_the_environment_still_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from_flag = load_settings({"prefill_overhead": "7ms"})
    assert from_flag.settings.frontend_latency == pytest.approx(0.007)
    assert [n.split(":")[0] for n in from_flag.notices] == ["flag"]
    monkeypatch.setenv("LLMSIM_PREFILL_OVERHEAD", "9ms")
    from_env = load_settings({})
    assert from_env.settings.frontend_latency == pytest.approx(0.009)
    assert from_env.sources["frontend_latency"] == "env"
    assert [n.split(":")[0] for n in from_env.notices] == ["environment"]
    assert load_settings({"frontend_latency": "1ms"}).settings.frontend_latency == 0.001


def test_the_new_name_wins_over_the_old_one() -> None:
    loaded = load_settings({"prefill_overhead": "7ms", "frontend_latency": "2ms"})
    assert loaded.settings.frontend_latency == pytest.approx(0.002)
    assert "prefill_overhead is ignored" in loaded.notices[0]


def test_profiles_show_says_what_each_builtin_was_fitted_on() -> None:
    fitted = _run("profiles", "show", "llama-3.3-70b-8xa100").output
    assert "step model fitted on" in fitted
    for rate in ("1 req/s", "4 req/s", "16 req/s", "all at once"):
        assert rate in fitted
    unfitted = _run("profiles", "show", "llama-3.1-8b-l40s").output
    assert "Under load: no published vLLM run under load" in unfitted
    burst_only = _run("profiles", "show", "llama-3.1-8b-h100").output
    assert "no published vLLM run at a moderate request rate" in burst_only


def test_a_command_prints_one_notice_line_for_an_old_key(tmp_path: Path) -> None:
    path = tmp_path / "old.toml"
    path.write_text('prefill_overhead = "30ms"\n', encoding="utf-8")
    result = _run("config", "show", "--config", str(path))
    assert result.exit_code == 0, result.output
    notices = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert notices == [
        f"note: {path}: prefill_overhead is now frontend_latency (the fixed time each request "
        "spends before the engine; it delays that request's admission and no longer lengthens "
        "engine steps)"
    ]
    assert re.search(r"frontend_latency\s*│\s*30ms\s*│\s*file", result.output)
