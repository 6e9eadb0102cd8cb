"""Metric overrides and runtime updates without HTTP: time functions on an explicit clock,
spec validation, the scrape-time substitution in the registry, and the settings swap."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmsim.engine import Engine
from llmsim.observability.metrics import Metrics
from llmsim.observability.overrides import MetricOverrides
from llmsim.runtime.adjustable import RUNTIME_FIELDS, Runtime, RuntimeUpdateError, validate_update
from llmsim.settings.fake_metrics import (
    FakeMetrics,
    FakeMetricsError,
    Oscillate,
    Ramp,
    Square,
    load_spec,
    parse_spec,
    read_spec_source,
)
from llmsim.settings.model import Settings
from llmsim.settings.sources import ConfigError, load_settings, validate_exactly


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- time functions ---------------------------------------------------------------------


def test_ramp_goes_from_start_to_end_over_one_period_then_holds() -> None:
    ramp = Ramp(start=0, end=64, period="60s")
    assert ramp.at(0) == 0
    assert ramp.at(15) == pytest.approx(16)
    assert ramp.at(30) == pytest.approx(32)
    assert ramp.at(60) == 64
    assert ramp.at(600) == 64
    assert ramp.at(-5) == 0


def test_repeating_ramp_is_a_sawtooth() -> None:
    ramp = Ramp(start=10, end=0, period="4s", repeat=True)
    assert ramp.at(1) == pytest.approx(7.5)
    assert ramp.at(4) == pytest.approx(10)
    assert ramp.at(5) == pytest.approx(7.5)
    assert ramp.at(7.9) == pytest.approx(0.25)


def test_oscillate_is_a_sine_from_start_to_end_and_back() -> None:
    wave = Oscillate(start=0.2, end=0.8, period="10s")
    assert wave.at(0) == pytest.approx(0.2)
    assert wave.at(2.5) == pytest.approx(0.5)
    assert wave.at(5) == pytest.approx(0.8)
    assert wave.at(7.5) == pytest.approx(0.5)
    assert wave.at(10) == pytest.approx(0.2)
    samples = [wave.at(t / 10) for t in range(200)]
    assert min(samples) >= 0.2 - 1e-9
    assert max(samples) <= 0.8 + 1e-9


def test_square_alternates_each_half_period() -> None:
    square = Square(start=1, end=5, period="2s")
    assert [square.at(t) for t in (0, 0.5, 0.99, 1.0, 1.5, 2.0, 3.2)] == [1, 1, 1, 5, 5, 1, 5]


def test_counts_are_rounded_but_the_cache_share_is_not() -> None:
    spec = parse_spec(
        {
            "num_requests_running": {"ramp": {"start": 0, "end": 10, "period": "10s"}},
            "kv_cache_usage_perc": {"ramp": {"start": 0, "end": 1, "period": "10s"}},
        }
    )
    assert spec.sample("num_requests_running", 3.4) == 3.0
    assert spec.sample("num_requests_running", 3.6) == 4.0
    assert spec.sample("kv_cache_usage_perc", 3.4) == pytest.approx(0.34)
    assert spec.sample("num_requests_waiting", 3.4) is None


def test_overrides_count_time_from_when_they_were_set() -> None:
    clock = FakeClock()
    registry = Metrics(Settings.model_validate({"port": 0})).registry
    overrides = MetricOverrides(clock, registry.collect, refresh_interval=0.001)
    assert overrides.value("num_requests_waiting") is None
    overrides.set(
        parse_spec({"num_requests_waiting": {"ramp": {"start": 0, "end": 100, "period": 100}}})
    )
    assert overrides.value("num_requests_waiting") == 0
    clock.now += 0.05  # period 100 means 100 ms, like every bare duration
    assert overrides.value("num_requests_waiting") == 50
    assert overrides.elapsed() == pytest.approx(0.05)
    overrides.set(parse_spec({"num_requests_waiting": 7}))
    assert overrides.current() == {"num_requests_waiting": 7}
    overrides.set(None)
    assert overrides.value("num_requests_waiting") is None
    assert overrides.elapsed() is None
    overrides.set(FakeMetrics())
    assert overrides.spec is None, "an empty spec clears"


# -- spec validation ----------------------------------------------------------------------


def test_describe_gives_the_spec_back_in_the_users_form() -> None:
    given = {
        "num_requests_waiting": 12,
        "num_requests_running": {"ramp": {"start": 0, "end": 64, "period": "60s"}},
        "kv_cache_usage_perc": {"square": {"start": 0.2, "end": 0.9, "period": "10s"}},
        "loras": {"running": ["a"], "waiting": ["b", "c"]},
    }
    assert parse_spec(given).describe() == given
    assert parse_spec(given) == parse_spec(parse_spec(given).describe())


@pytest.mark.parametrize(
    ("data", "param", "fragment"),
    [
        ({"num_requests_queued": 1}, "num_requests_queued", "unknown key"),
        ({"num_requests_waiting": -1}, "num_requests_waiting", "between 0 and"),
        ({"kv_cache_usage_perc": 1.5}, "kv_cache_usage_perc", "between 0 and 1"),
        (
            {"kv_cache_usage_perc": {"oscillate": {"start": 0, "end": 2, "period": "1s"}}},
            "kv_cache_usage_perc",
            "between 0 and 1",
        ),
        ({"num_requests_waiting": "12"}, "num_requests_waiting", "expected a number"),
        ({"num_requests_waiting": True}, "num_requests_waiting", "expected a number"),
        (
            {"num_requests_waiting": {"saw": {"start": 0, "end": 1, "period": "1s"}}},
            "num_requests_waiting",
            "unknown time function 'saw'",
        ),
        (
            {"num_requests_waiting": {"ramp": {"start": 0, "end": 1}}},
            "num_requests_waiting.ramp.period",
            "field required",
        ),
        (
            {"num_requests_waiting": {"ramp": {"start": 0, "end": 1, "period": "0s"}}},
            "num_requests_waiting.ramp.period",
            "greater than 0",
        ),
        (
            {"num_requests_waiting": {"square": {"start": 0, "end": 1, "period": "soon"}}},
            "num_requests_waiting.square.period",
            "invalid duration",
        ),
        (
            {"num_requests_waiting": {"ramp": {"start": 0, "end": 1, "period": 5, "step": 1}}},
            "num_requests_waiting.ramp.step",
            "unknown key",
        ),
        ({"loras": {"running": ["a,b"]}}, "loras.running[0]", "contains a comma"),
        ({"loras": {"active": ["a"]}}, "loras.active", "unknown key"),
    ],
)
def test_invalid_specs_name_the_culprit(data: object, param: str, fragment: str) -> None:
    with pytest.raises(FakeMetricsError) as caught:
        parse_spec(data)
    assert caught.value.param == param
    assert fragment in caught.value.message
    assert caught.value.message.startswith(param)


def test_specs_are_read_from_inline_json_json_files_and_toml_files(tmp_path: Path) -> None:
    json_file = tmp_path / "pins.json"
    json_file.write_text(json.dumps({"num_requests_waiting": 3}))
    toml_file = tmp_path / "pins.toml"
    toml_file.write_text(
        "num_requests_waiting = 4\n\n[num_requests_running.square]\n"
        'start = 1\nend = 2\nperiod = "2s"\n'
    )
    assert load_spec('{"num_requests_waiting": 2}').sample("num_requests_waiting", 0) == 2
    assert load_spec(str(json_file)).sample("num_requests_waiting", 0) == 3
    from_toml = load_spec(str(toml_file))
    assert from_toml.sample("num_requests_waiting", 0) == 4
    assert from_toml.sample("num_requests_running", 1.5) == 2
    for source, fragment in [
        ("{not json", "invalid JSON"),
        ('{"num_requests_waiting": NaN}', "NaN is not a number"),
        (str(tmp_path / "missing.json"), "file not found"),
    ]:
        with pytest.raises(FakeMetricsError, match=fragment):
            read_spec_source(source)


def test_fake_metrics_setting_accepts_json_files_and_profile_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("LLMSIM_FAKE_METRICS", "LLMSIM_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    profile = tmp_path / "profile.toml"
    profile.write_text("[fake_metrics]\nnum_requests_waiting = 9\n")
    loaded = load_settings({"config": str(profile)}).settings
    assert loaded.fake_metrics is not None
    assert loaded.fake_metrics.sample("num_requests_waiting", 0) == 9
    monkeypatch.setenv("LLMSIM_FAKE_METRICS", '{"kv_cache_usage_perc": 0.25}')
    from_env = load_settings().settings.fake_metrics
    assert from_env is not None
    assert from_env.sample("kv_cache_usage_perc", 0) == 0.25
    with pytest.raises(ConfigError) as caught:
        load_settings({"fake_metrics": '{"kv_cache_usage_perc": 2}'})
    assert caught.value.lines == [
        "--fake-metrics: kv_cache_usage_perc: values must be between 0 and 1"
    ]


# -- scrape-time substitution ---------------------------------------------------------------


def _scrape(metrics: Metrics) -> dict[str, Any]:
    """Gauge values by name; for the LoRA info gauge, the labels of the newest series."""
    values: dict[str, Any] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        if family.name == "vllm:lora_requests_info":
            newest = max(family.samples, key=lambda sample: sample.value)
            values["running"] = newest.labels["running_lora_adapters"]
            values["waiting"] = newest.labels["waiting_lora_adapters"]
        elif family.name.startswith(("vllm:num_requests", "vllm:kv_cache")):
            values[family.name] = family.samples[0].value
    return values


def _engine_and_metrics(settings: Settings) -> tuple[Engine, Metrics]:
    metrics = Metrics(settings)
    engine = Engine(settings, observer=metrics)
    metrics.track(engine.scheduler, settings.kv_cache_size)
    metrics.set_overrides(settings.fake_metrics)
    return engine, metrics


def test_overrides_replace_only_the_named_metrics_and_clearing_restores_them() -> None:
    _, metrics = _engine_and_metrics(Settings.model_validate({"port": 0}))
    live = _scrape(metrics)
    assert live["vllm:num_requests_waiting"] == 0
    assert live["running"] == ""
    metrics.set_overrides(
        parse_spec({"num_requests_waiting": 12, "loras": {"running": ["a", "b"], "waiting": ["c"]}})
    )
    pinned = _scrape(metrics)
    assert pinned["vllm:num_requests_waiting"] == 12
    assert pinned["vllm:num_requests_running"] == 0
    assert (pinned["running"], pinned["waiting"]) == ("a,b", "c")
    metrics.set_overrides(None)
    restored = _scrape(metrics)
    assert restored["vllm:num_requests_waiting"] == 0
    assert (restored["running"], restored["waiting"]) == ("", "")


def test_start_up_spec_is_in_force_from_the_first_scrape() -> None:
    settings = Settings.model_validate({"fake_metrics": '{"kv_cache_usage_perc": 0.75}'})
    _, metrics = _engine_and_metrics(settings)
    assert _scrape(metrics)["vllm:kv_cache_usage_perc"] == 0.75


# -- runtime updates ------------------------------------------------------------------------


def test_update_swaps_latency_mode_faults_and_lora_latency_at_once() -> None:
    settings = Settings.model_validate({"seed": 3})
    engine, metrics = _engine_and_metrics(settings)
    runtime = Runtime(settings, engine, metrics)
    old_latency, old_faults = engine.latency, runtime.faults
    changed = runtime.update(
        {
            "time_to_first_token": "1.5s",
            "time_to_first_token_std_dev": 300,
            "mode": "echo",
            "failure_injection_rate": "100",
            "failure_types": "server_error",
            "lora_load_latency": "250ms",
        }
    )
    assert changed == [
        "time_to_first_token",
        "time_to_first_token_std_dev",
        "lora_load_latency",
        "failure_injection_rate",
        "failure_types",
        "mode",
    ]
    assert engine.latency is not old_latency
    assert old_latency.profile.time_to_first_token == 0.0, "running sequences keep theirs"
    assert engine.latency.profile.time_to_first_token == 1.5
    assert engine.latency.profile.time_to_first_token_std_dev == pytest.approx(0.3)
    assert engine.settings.mode == "echo"
    assert engine.loras.load_latency == 0.25
    assert runtime.faults is not old_faults
    fault = runtime.faults.pick(None, "m")
    assert fault is not None
    assert fault.status == 503
    assert old_faults.pick(None, "m") is None
    assert runtime.settings.port == settings.port
    assert runtime.settings.seed == 3


def test_refused_updates_change_nothing() -> None:
    settings = Settings.model_validate({"port": 8000, "time_to_first_token": "100ms"})
    engine, metrics = _engine_and_metrics(settings)
    runtime = Runtime(settings, engine, metrics)
    before = (runtime.settings, engine.latency, runtime.faults)
    with pytest.raises(RuntimeUpdateError) as caught:
        runtime.update({"inter_token_latency": "5ms", "time_to_first_token_std_dev": "40ms"})
    assert caught.value.param == "time_to_first_token_std_dev"
    assert "at most 30%" in caught.value.message
    assert (runtime.settings, engine.latency, runtime.faults) == before


def test_updates_are_validated_without_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSIM_MODE", "echo")
    monkeypatch.setenv("LLMSIM_API_KEY", "from-the-environment")
    assert validate_exactly({}).mode == "random"
    assert validate_exactly({}).api_key is None
    assert Settings.model_validate({}).mode == "echo", "the plain model would read it"


@pytest.mark.parametrize(
    ("changes", "param", "fragment"),
    [
        ({}, None, "No settings given"),
        ({"ttft": "1s"}, "ttft", "Unknown setting 'ttft'"),
        ({"port": 9000}, "port", "cannot be changed at run time; restart the server with --port"),
        ({"max_running_requests": 3}, "max_running_requests", "cannot be changed at run time"),
        ({"inter_token_latency": "soon"}, "inter_token_latency", "invalid duration 'soon'"),
        ({"inter_token_latency": -5}, "inter_token_latency", "must not be negative"),
        ({"time_factor_under_load": 0.5}, "time_factor_under_load", "greater than or equal to 1"),
        ({"stream_cut_rate": True}, "stream_cut_rate", "boolean"),
        ({"failure_types": "rate_limit,oops"}, "failure_types", "rate_limit"),
        (
            {"failure_injection_rate": 5, "failure_types": []},
            "failure_types",
            "must name at least one type",
        ),
    ],
)
def test_invalid_updates_are_refused_with_the_reason(
    changes: dict[str, object], param: str | None, fragment: str
) -> None:
    with pytest.raises(RuntimeUpdateError) as caught:
        validate_update(Settings.model_validate({}), changes)
    assert caught.value.param == param
    assert fragment in caught.value.message


def test_durations_accept_the_command_line_syntax_and_bare_milliseconds() -> None:
    current = Settings.model_validate({"inter_token_latency": "20ms"})
    updated = validate_update(current, {"time_to_first_token": "1.5s", "lora_load_latency": 250})
    assert updated.time_to_first_token == 1.5
    assert updated.lora_load_latency == 0.25
    assert updated.inter_token_latency == pytest.approx(0.02), "untouched values survive exactly"
    odd = Settings.model_validate({"time_to_first_token": math.pi})
    assert validate_update(odd, {"mode": "echo"}).time_to_first_token == odd.time_to_first_token


def test_every_runtime_field_is_a_setting() -> None:
    assert set(RUNTIME_FIELDS) <= set(Settings.model_fields)
