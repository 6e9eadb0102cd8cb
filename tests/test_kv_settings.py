"""--kv-events-config, --prefix-caching-hash-algo and the P/D settings: every layer, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from llmsim.settings import model as settings_model
from llmsim.settings.sources import ConfigError, load_settings


def test_flag_takes_vllm_json() -> None:
    flag = '{"enable_kv_cache_events": true, "endpoint": "tcp://*:6000", "topic": "kv"}'
    events = load_settings({"kv_events_config": flag}).settings.kv_events_config
    assert events is not None
    assert events.publishes
    assert (events.endpoint, events.topic, events.publisher) == ("tcp://*:6000", "kv", "zmq")


def test_toml_table_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text(
        'prefix_caching_hash_algo = "sha256_cbor"\n'
        '[kv_events_config]\nenable_kv_cache_events = true\nreplay_endpoint = "tcp://*:5558"\n'
    )
    loaded = load_settings({"config": str(profile)}).settings
    assert loaded.kv_events_config is not None
    assert loaded.kv_events_config.replay_endpoint == "tcp://*:5558"
    monkeypatch.setenv("LLMSIM_KV_EVENTS_CONFIG", '{"enable_kv_cache_events": false}')
    monkeypatch.setenv("LLMSIM_PREFIX_CACHING_HASH_ALGO", "xxhash_cbor")
    settings = load_settings({}).settings
    assert settings.kv_events_config is not None
    assert not settings.kv_events_config.publishes
    assert settings.prefix_caching_hash_algo == "xxhash_cbor"


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        ({"kv_events_config": "{nope"}, "--kv-events-config: invalid JSON"),
        ({"kv_events_config": "[1]"}, "--kv-events-config: must be a JSON object"),
        ({"kv_events_config": '{"hwm": -1}'}, "--kv-events-config"),
        ({"kv_events_config": '{"endpoint": "http://x"}'}, "tcp://"),
        ({"prefix_caching_hash_algo": "md5"}, "--prefix-caching-hash-algo"),
        (
            {"kv_cache_transfer_latency": "100ms", "kv_cache_transfer_latency_std_dev": "50ms"},
            "--kv-cache-transfer-latency-std-dev: must be at most 30%",
        ),
    ],
)
def test_bad_values_are_one_line(flags: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(flags)
    assert len(info.value.lines) == 1
    assert fragment in info.value.lines[0]


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_model, "missing_kv_events_packages", lambda: ["zmq"])
    with pytest.raises(ConfigError) as info:
        load_settings({"kv_events_config": '{"enable_kv_cache_events": true}'})
    assert "llmsim[kv-events]" in info.value.lines[0]
    # Configured but disabled needs nothing.
    load_settings({"kv_events_config": '{"enable_kv_cache_events": false}'})


def test_cli_exits_2_with_one_line() -> None:
    result = run_cli("serve", "--kv-events-config", '{"enable_kv_cache_events": 1, "x": 2}')
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--kv-events-config: x: extra inputs are not permitted" in result.stderr  # the key


@pytest.mark.parametrize(("model", "warned"), [("constant", True), ("step", False)])
def test_events_outside_step_mode_are_warned_about(
    model: str, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    from conftest import free_port

    from llmsim.observability.kv_publishing import make_kv_listener
    from llmsim.settings.model import Settings

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = f'{{"enable_kv_cache_events": true, "endpoint": "{endpoint}"}}'
    settings = Settings(latency_model=model, kv_events_config=config)
    with caplog.at_level("WARNING", logger="llmsim.kv_events"):
        listener = make_kv_listener(settings)
    listener.close()
    assert ("--latency-model step" in caplog.text) is warned
