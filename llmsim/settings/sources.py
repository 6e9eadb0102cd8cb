"""Layering of settings: CLI flags > ``LLMSIM_*`` environment > named profile > TOML file
top level > defaults.

Also answers "where did this value come from?" for ``llmsim config show`` and turns
validation failures into one readable line per problem, naming the option as the
user wrote it (flag, variable or profile key).
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import AliasChoices, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
)

from llmsim.settings.model import (
    DURATION_FIELDS,
    ENV_PREFIX,
    LAYER_FIELDS,
    SECRET_FIELDS,
    SIZE_FIELDS,
    ConfigError,
    Settings,
    env_name,
    option_flag,
)
from llmsim.settings.profiles import (
    BUILTIN,
    PROFILES_TABLE,
    NamedProfile,
    find_profile,
    parse_profiles,
    unknown_keys,
)
from llmsim.settings.renamed import migrate, renamed_environment
from llmsim.settings.units import format_duration, format_size, parse_duration

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT = "default"
FILE = "file"
PROFILE = "profile"
ENV = "env"
FLAG = "flag"


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    sources: dict[str, str]
    config_path: Path | None
    profile: NamedProfile | None = None
    notices: tuple[str, ...] = ()
    """One line for each renamed key that was used, saying what it became."""

    def describe_source(self, name: str) -> str:
        """Where a setting came from, for ``llmsim config show``."""
        source = self.sources[name]
        if source == FILE:
            return f"file ({self.config_path})"
        if source == PROFILE and self.profile is not None:
            return f"profile {self.profile.name} ({self.profile.origin})"
        return source


@dataclass(frozen=True)
class ConfigFile:
    """A parsed TOML file: top-level settings and its named profiles."""

    values: dict[str, Any]
    profiles: dict[str, NamedProfile]


class _DictSource(PydanticBaseSettingsSource):
    """Serves already-parsed TOML values as a pydantic-settings source."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = dict(values)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


def read_profile(path: Path) -> dict[str, Any]:
    """The top-level settings of a TOML file, rejecting keys that are not settings."""
    return read_config_file(path).values


def read_config_file(path: Path) -> ConfigFile:
    """Parse a TOML file: top-level settings plus optional ``[profiles.NAME]`` tables."""
    try:
        with path.open("rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([f"--config: file not found: {path}"]) from None
    except IsADirectoryError:
        raise ConfigError([f"--config: {path} is a directory, not a TOML file"]) from None
    except OSError as exc:
        raise ConfigError([f"--config: cannot read {path}: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"--config: {path} is not valid TOML: {exc}"]) from None
    profiles_table = data.pop(PROFILES_TABLE, {})
    unknown = unknown_keys(data)
    if unknown:
        raise ConfigError(
            [
                f"{path}: unknown key {key!r} (see `llmsim config init` for the keys)"
                for key in unknown
            ]
        )
    return ConfigFile(values=data, profiles=parse_profiles(profiles_table, str(path)))


_ENV_ALIASES = frozenset(
    str(choice).upper()
    for field in Settings.model_fields.values()
    if isinstance(field.validation_alias, AliasChoices)
    for choice in field.validation_alias.choices
)
"""Environment variables besides ``LLMSIM_*`` that set a setting (``VLLM_API_KEY``)."""


def _env_values() -> dict[str, Any]:
    """Environment values by field name (a field with aliases, like api_key, comes back
    under its first alias)."""
    by_alias = {
        str(choice).lower(): name
        for name, field in Settings.model_fields.items()
        if isinstance(field.validation_alias, AliasChoices)
        for choice in field.validation_alias.choices
    }
    values = {}
    for key, value in EnvSettingsSource(Settings)().items():
        name = key if key in Settings.model_fields else by_alias.get(key.lower())
        if name is not None:
            values[name] = value
    return values


VLLM_SECONDS_ENV = {"VLLM_LOG_STATS_INTERVAL": "log_stats_interval"}
"""vLLM's variables for a duration setting: a bare number there counts seconds (llmsim's
bare durations count milliseconds). The ``LLMSIM_*`` variable wins when both are set."""


def _vllm_seconds_environment() -> dict[str, str]:
    found = {}
    for variable, field in VLLM_SECONDS_ENV.items():
        value = os.environ.get(variable, "").strip()
        if value and env_name(field) not in os.environ:
            found[field] = f"{value}s" if re.fullmatch(r"\d+(\.\d*)?|\.\d+", value) else value
    return found


def load_settings(
    cli: Mapping[str, Any] | None = None, *, flag_name: Callable[[str], str] = option_flag
) -> LoadedSettings:
    """Build the validated settings from every layer, or raise :class:`ConfigError`.

    ``flag_name`` says how errors name a value of ``cli`` (``--max-loras`` by default;
    a fleet file names its keys instead).
    """
    flags = {key: value for key, value in (cli or {}).items() if value is not None}
    flags, notices = migrate(flags, "flag")
    env = _env_values() if _environment_names_settings() else {}
    old_env, env_notices = migrate(renamed_environment(), "environment")
    notices += env_notices
    old_env.update(_vllm_seconds_environment())
    env.update(old_env)
    config_value = flags.get("config") or env.get("config") or os.environ.get("LLMSIM_CONFIG")
    config_path = Path(config_value) if config_value else None
    config_file = read_config_file(config_path) if config_path else ConfigFile({}, {})
    profile = _chosen_profile(flags.get("profile") or env.get("profile"), config_file)
    profile_values = dict(profile.values) if profile else {}
    if profile:
        profile_values, profile_notices = migrate(profile_values, f"profile {profile.name}")
        notices += profile_notices
    file_values, file_notices = migrate(config_file.values, str(config_path))
    notices += file_notices

    sources: dict[str, str] = {}
    layers = ((FLAG, flags), (ENV, env), (PROFILE, profile_values), (FILE, file_values))
    for name in Settings.model_fields:
        sources[name] = next((origin for origin, layer in layers if name in layer), DEFAULT)

    layered = _layered_settings_class({**file_values, **profile_values}, bool(env))
    try:
        settings = layered(**{**old_env, **flags})  # old variables are not read by name
    except ValidationError as exc:
        raise ConfigError(_describe_errors(exc, sources, config_path, profile, flag_name)) from None
    return LoadedSettings(
        settings=settings,
        sources=sources,
        config_path=config_path,
        profile=profile,
        notices=tuple(notices),
    )


def _chosen_profile(name: Any, config_file: ConfigFile) -> NamedProfile | None:
    return find_profile(str(name), config_file.profiles) if name else None


def _environment_names_settings() -> bool:
    """Whether any environment variable may set a setting (``LLMSIM_*``, ``VLLM_API_KEY``).

    Reading the environment through pydantic costs tens of milliseconds, which a fleet
    would pay for every instance; without such a variable it has nothing to find.
    """
    return any(
        name.upper().startswith(ENV_PREFIX.upper()) or name.upper() in _ENV_ALIASES
        for name in os.environ
    )


def _layered_settings_class(file_values: Mapping[str, Any], environment: bool) -> type[Settings]:
    """Settings read from flags, then the environment (if it names any), then ``file_values``.

    A pydantic class costs tens of milliseconds to build, so without file or profile
    values (every instance of a plain fleet) a class built at import serves them all.
    """
    if not file_values:
        return _flags_and_environment() if environment else _ExactSettings

    class LayeredSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            assert isinstance(init_settings, InitSettingsSource)
            return init_settings, env_settings, _DictSource(settings_cls, file_values)

    LayeredSettings.__name__ = "Settings"
    return LayeredSettings


@functools.cache
def _flags_and_environment() -> type[Settings]:
    """Settings from flags, then the environment: built on first use (building a pydantic
    class costs tens of milliseconds, which a command without the variables need not pay)."""

    class FlagsAndEnvironment(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, env_settings

    FlagsAndEnvironment.__name__ = "Settings"
    return FlagsAndEnvironment


def _where(
    field: str,
    origin: str,
    config_path: Path | None,
    profile: NamedProfile | None,
    flag_name: Callable[[str], str],
) -> str:
    if origin == FLAG:
        return flag_name(field)
    if origin == ENV:
        return env_name(field)
    if origin == FILE:
        return f"{field} in {config_path}"
    if origin == PROFILE and profile is not None:
        where = "built-in profile" if profile.origin == BUILTIN else f"{profile.origin}, profile"
        return f"{field} in {where} {profile.name!r}"
    return f"{flag_name(field)} (default)"


def _describe_errors(
    exc: ValidationError,
    sources: Mapping[str, str],
    config_path: Path | None,
    profile: NamedProfile | None,
    flag_name: Callable[[str], str],
) -> list[str]:
    return [
        f"{_where(field, sources.get(field, DEFAULT), config_path, profile, flag_name)}: {reason}"
        for field, reason in field_errors(exc)
    ]


def field_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """``(setting, reason)`` for each problem, worded as the command line words them."""
    problems = []
    for error in exc.errors(include_url=False):
        ctx = error.get("ctx") or {}
        loc = error["loc"]
        field = str(loc[0]) if loc else str(ctx.get("field", "settings"))
        reason = str(ctx["reason"]) if error["type"] == "cross_field" else _reason(error)
        if field in DURATION_FIELDS and error["type"] == "less_than_equal":
            reason = f"must be at most {format_duration(float(ctx['le']))}"  # not bare seconds
        if len(loc) > 1:  # inside a setting that is an object: name the key
            reason = f"{'.'.join(str(part) for part in loc[1:])}: {reason}"
        problems.append((field, reason))
    return problems


def validate_exactly(values: Mapping[str, Any]) -> Settings:
    """Validate a complete set of values with the settings model and nothing else.

    Unlike ``Settings(**values)`` no environment variable or profile is consulted, so
    re-validating a running server's settings cannot pick up a changed environment.
    """
    return _ExactSettings.model_validate(dict(values))


class _ExactSettings(Settings):
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


_ExactSettings.__name__ = "Settings"


def _reason(error: Any) -> str:
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    return message[:1].lower() + message[1:]


# -- presentation helpers used by ``llmsim config`` ---------------------------------


def _seconds(value: Any) -> float:
    """Seconds of a validated duration, or of a field default written as text ("30s")."""
    return parse_duration(value) if isinstance(value, str) else float(value)


def display_value(name: str, value: Any) -> str:
    """Render a setting the way a user would write it on the command line."""
    if value is None:
        return "-"
    if name in SECRET_FIELDS:
        return "********"
    if isinstance(value, bool):
        return "true" if value else "false"
    if name in DURATION_FIELDS:
        return format_duration(_seconds(value))
    if name in SIZE_FIELDS:
        return format_size(int(value))
    if name == "lora_modules":
        return ", ".join(f"{m.name}={m.path}" for m in value) or "-"
    if name == "fake_metrics":
        return json.dumps(value.describe())
    if name == "responses":
        return str(value.origin)
    if name in ("kv_events_config", "kv_transfer_config"):
        return json.dumps(value.describe())
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "-"
    return str(value)


def toml_value(name: str, value: Any) -> Any:
    """A TOML-serialisable form of a setting (durations as strings)."""
    if name in DURATION_FIELDS:
        return format_duration(_seconds(value))
    if name in SIZE_FIELDS:
        return format_size(int(value))
    if name == "lora_modules":
        return [m.model_dump(exclude_none=True) for m in value]
    if name in ("fake_metrics", "kv_events_config", "kv_transfer_config"):
        return value.describe()
    if name == "responses":
        return value.describe() if value.origin == "inline" else value.origin
    if isinstance(value, Path):
        return str(value)
    return value


def render_default_profile() -> str:
    """A complete, commented TOML profile of the defaults.

    Settings without a fixed default (seed, adapters, ...) are written as commented
    examples, so uncommenting a line is all it takes to use them.
    """
    defaults = Settings()
    lines = [
        "# llmsim profile: every key is optional; flags and LLMSIM_* variables override it.",
        "# Durations accept 250ms, 1.5s, 750us, or a bare number of milliseconds.",
        "",
    ]
    for name, info in Settings.model_fields.items():
        if name in LAYER_FIELDS:
            continue
        lines.extend(f"# {line}" for line in textwrap.wrap(info.description or name, 86))
        default = info.get_default(call_default_factory=True)
        if default is None or default == []:
            example = {name: _EXAMPLES.get(name, "")}
            lines.append("# " + tomli_w.dumps(example).strip().replace("\n", "\n# "))
        else:
            lines.append(tomli_w.dumps({name: toml_value(name, getattr(defaults, name))}).strip())
        lines.append("")
    lines.extend(_PROFILES_EXAMPLE)
    return "\n".join(lines)


_PROFILES_EXAMPLE = [
    "# Named profiles: pick one with --profile NAME (or LLMSIM_PROFILE=NAME). Its keys override",
    "# the top-level ones; flags and LLMSIM_* variables still override both. Built-in profiles",
    "# (`llmsim profiles list`) can be picked the same way without a file.",
    "# [profiles.slow]",
    '# description = "A busy 70B deployment"',
    '# time_to_first_token = "800ms"',
    '# inter_token_latency = "45ms"',
    "",
]


_EXAMPLES: dict[str, Any] = {
    "seed": 42,
    "max_cpu_loras": 4,
    "served_model_name": ["my-model"],
    "lora": ["sql-lora", "chat-lora"],
    "lora_modules": ["tools-lora=/adapters/tools"],
    "api_key": "change-me",
    "fake_metrics": "fake-metrics.json",
    "responses": "responses.toml",
    "dataset": "conversations.jsonl",
    "replay": "recording.jsonl",
    "upstream": "http://127.0.0.1:8001",
    "kv_events_config": '{"enable_kv_cache_events": true, "endpoint": "tcp://*:5557"}',
    "kv_transfer_config": '{"kv_connector": "NixlConnector", "kv_role": "kv_both"}',
    "max_log_len": 200,
}
