"""Settings: durations, validation, layering and provenance (no server involved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmsim.settings.lora_modules import LoraModule
from llmsim.settings.model import LAYER_FIELDS, Settings
from llmsim.settings.sources import ConfigError, load_settings, render_default_profile
from llmsim.settings.units import format_duration, parse_duration

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("LLMSIM_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("750us", 0.00075),
        ("750µs", 0.00075),
        ("2m", 120.0),
        ("200", 0.2),
        (200, 0.2),
        (0, 0.0),
        (" 10 ms ", 0.01),
    ],
)
def test_parse_duration_accepts_units_and_bare_milliseconds(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["-5ms", "fast", "10 parsecs", "1e400", True, None, "nan"])
def test_parse_duration_rejects_nonsense(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize("seconds", [0.0, 0.0005, 0.02, 0.25, 1.5, 90.0])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_defaults_are_a_valid_zero_flag_start() -> None:
    settings = load_settings({}).settings
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.mode == "random"
    assert settings.max_cpu_loras == settings.max_loras == 1
    assert settings.served_names == [settings.model]


def test_precedence_flag_over_env_over_file_over_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text(
        'time_to_first_token = "300ms"\ninter_token_latency = "30ms"\nmax_loras = 3\nmode = "echo"\n'
    )
    monkeypatch.setenv("LLMSIM_INTER_TOKEN_LATENCY", "20ms")
    monkeypatch.setenv("LLMSIM_MAX_LORAS", "2")
    loaded = load_settings({"config": str(profile), "max_loras": "4"})
    s = loaded.settings
    assert s.time_to_first_token == pytest.approx(0.3)
    assert s.inter_token_latency == pytest.approx(0.02)
    assert s.max_loras == 4
    assert s.mode == "echo"
    assert s.port == 8000
    assert loaded.sources["time_to_first_token"] == "file"
    assert loaded.sources["inter_token_latency"] == "env"
    assert loaded.sources["max_loras"] == "flag"
    assert loaded.sources["port"] == "default"


def test_the_environment_is_read_with_and_without_a_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    assert load_settings({}).settings.api_key is None
    monkeypatch.setenv("VLLM_API_KEY", "from-vllm")
    alone = load_settings({}).settings.api_key  # the only variable naming a setting
    assert alone is not None
    assert alone.get_secret_value() == "from-vllm"
    monkeypatch.setenv("llmsim_max_loras", "3")  # names are not case-sensitive
    plain = load_settings({})
    profile = tmp_path / "p.toml"
    profile.write_text('mode = "echo"\n')
    layered = load_settings({"config": str(profile)})
    for loaded in (plain, layered):
        assert loaded.settings.api_key is not None
        assert loaded.settings.api_key.get_secret_value() == "from-vllm"
        assert loaded.settings.max_loras == 3
        assert loaded.sources["max_loras"] == "env"
    assert layered.settings.mode == "echo"


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text('model = "from-file"\n')
    monkeypatch.setenv("LLMSIM_CONFIG", str(profile))
    loaded = load_settings({})
    assert loaded.settings.model == "from-file"
    assert loaded.config_path == profile


def test_lists_from_every_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSIM_LORA", "a,b")
    monkeypatch.setenv("LLMSIM_SERVED_MODEL_NAME", "x,y")
    monkeypatch.setenv("LLMSIM_LORA_MODULES", 'c=/p/c {"name": "d", "path": "/p/d"}')
    s = load_settings({}).settings
    assert s.lora == ["a", "b"]
    assert s.served_names == ["x", "y"]
    assert s.lora_modules == [LoraModule(name="c", path="/p/c"), LoraModule(name="d", path="/p/d")]

    profile = tmp_path / "p.toml"
    profile.write_text('lora = ["e", "f,g"]\nlora_modules = ["h=/h", {name = "i", path = "/i"}]\n')
    monkeypatch.delenv("LLMSIM_LORA")
    monkeypatch.delenv("LLMSIM_LORA_MODULES")
    s = load_settings({"config": str(profile), "lora": ["k,e", "l"]}).settings
    assert s.lora == ["k", "e", "l"]
    assert [m.name for m in s.lora_modules] == ["h", "i"]
    assert [a.name for a in s.adapters] == ["k", "e", "l", "h", "i"]


def test_lora_modules_json_with_base_model() -> None:
    s = Settings(lora_modules=['{"name": "a", "path": "/a", "base_model_name": "m"}'])
    assert s.lora_modules[0].base_model_name == "m"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"time_to_first_token": "-5ms"}, "--time-to-first-token: duration must not be negative"),
        ({"mode": "loud"}, "--mode: input should be 'echo' or 'random'"),
        (
            {"inter_token_latency": "10ms", "inter_token_latency_std_dev": "5ms"},
            "--inter-token-latency-std-dev: must be at most 30% of inter-token-latency",
        ),
        (
            {"time_to_first_token_std_dev": "1ms"},
            "--time-to-first-token-std-dev: must be at most 30% of time-to-first-token",
        ),
        ({"max_loras": "3", "max_cpu_loras": "2"}, "--max-cpu-loras: must be at least max-loras"),
        ({"port": "70000"}, "--port: input should be less than or equal to 65535"),
        ({"port": "http"}, "--port: input should be a valid integer"),
        ({"lora": "a,a"}, None),
        ({"lora": "a", "lora_modules": ["a=/x"]}, "--lora: adapter names given twice: a"),
        ({"time_factor_under_load": "0.5"}, "--time-factor-under-load: input should be greater"),
        ({"lora_modules": ["noequals"]}, "--lora-modules: invalid adapter 'noequals'"),
    ],
)
def test_invalid_values_name_the_option(flags: dict[str, object], expected: str | None) -> None:
    if expected is None:
        assert load_settings(flags).settings.lora == ["a"]
        return
    with pytest.raises(ConfigError) as info:
        load_settings(flags)
    assert any(line.startswith(expected) for line in info.value.lines), info.value.lines


def test_errors_name_env_var_or_file_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSIM_MAX_LORAS", "zero")
    with pytest.raises(ConfigError) as info:
        load_settings({})
    assert info.value.lines[0].startswith("LLMSIM_MAX_LORAS: ")
    monkeypatch.delenv("LLMSIM_MAX_LORAS")

    profile = tmp_path / "p.toml"
    profile.write_text('mode = "loud"\n')
    with pytest.raises(ConfigError) as info:
        load_settings({"config": str(profile)})
    assert info.value.lines[0].startswith(f"mode in {profile}: ")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("mode = \n", "is not valid TOML"),
        ("modee = 'echo'\n", "unknown key 'modee'"),
        ("config = 'other.toml'\n", "unknown key 'config'"),
    ],
)
def test_bad_profiles_are_reported(tmp_path: Path, content: str, fragment: str) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings({"config": str(profile)})
    assert fragment in info.value.lines[0]


def test_missing_profile_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings({"config": str(tmp_path / "absent.toml")})


def test_default_profile_is_complete_and_loads_back(tmp_path: Path) -> None:
    text = render_default_profile()
    data = tomllib.loads(text)
    for name in Settings.model_fields:
        if name in LAYER_FIELDS:
            continue
        assert f"{name} =" in text, name
    assert "# [profiles.slow]" in text
    profile = tmp_path / "defaults.toml"
    profile.write_text(text)
    loaded = load_settings({"config": str(profile)}).settings
    assert loaded.model_dump(exclude={"config"}) == Settings().model_dump(exclude={"config"})
    assert data["time_to_first_token"] == "0ms"


def test_log_and_dashboard_settings_from_every_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = load_settings({}).settings
    assert (defaults.log_format, defaults.access_log, defaults.dashboard) == ("text", True, False)
    profile = tmp_path / "p.toml"
    profile.write_text('log_format = "json"\naccess_log = false\ndashboard = true\n')
    loaded = load_settings({"config": str(profile)})
    assert (loaded.settings.log_format, loaded.settings.access_log) == ("json", False)
    assert loaded.settings.dashboard is True
    assert loaded.sources["dashboard"] == "file"
    monkeypatch.setenv("LLMSIM_ACCESS_LOG", "on")
    monkeypatch.setenv("LLMSIM_DASHBOARD", "0")
    loaded = load_settings({"config": str(profile), "log_format": "text"})
    assert loaded.settings.access_log is True
    assert loaded.settings.dashboard is False
    assert loaded.settings.log_format == "text"
    assert loaded.sources["access_log"] == "env"
    loaded = load_settings({"config": str(profile), "dashboard": True, "access_log": False})
    assert loaded.settings.dashboard is True
    assert loaded.settings.access_log is False
    assert loaded.sources["access_log"] == "flag"


@pytest.mark.parametrize(
    ("flags", "env", "fragment"),
    [
        ({"log_format": "xml"}, {}, "--log-format: input should be 'text' or 'json'"),
        ({}, {"LLMSIM_DASHBOARD": "maybe"}, "LLMSIM_DASHBOARD: input should be a valid boolean"),
    ],
)
def test_bad_log_settings_are_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, flags: dict[str, str], env: dict[str, str], fragment: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(flags)
    assert len(caught.value.lines) == 1
    assert fragment in caught.value.lines[0]
