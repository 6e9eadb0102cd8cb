"""The one settings object every part of llmsim receives.

Each field is at the same time a CLI flag (``--time-to-first-token``), an environment
variable (``LLMSIM_TIME_TO_FIRST_TOKEN``) and a TOML key (``time_to_first_token``).
How the layers are merged lives in :mod:`llmsim.settings.sources`.
"""

from __future__ import annotations

from pydantic import field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmsim.settings.data_parallel import data_parallel_layout, data_parallel_problem
from llmsim.settings.field_types import (
    FAILURE_TYPES,
    MAX_DATA_PARALLEL_SIZE,
    MAX_PORT,
    MAX_STD_DEV_RATIO,
    MAX_STEP_DURATION,
    ByteSize,
    DataParallelBackend,
    Duration,
    FailureType,
    JsonNames,
    Names,
    StepDuration,
)
from llmsim.settings.groups.answers import AnswerFields
from llmsim.settings.groups.metrics_kv import MetricsKvFields
from llmsim.settings.groups.served_model import ModelFields
from llmsim.settings.groups.server import ServerFields
from llmsim.settings.groups.timing import TimingFields
from llmsim.settings.groups.tls import TlsFields
from llmsim.settings.kv_events import KV_EVENTS_EXTRA, missing_kv_events_packages, xxhash_missing
from llmsim.settings.lora_modules import LoraModule
from llmsim.settings.parsers import REASONING_PARSERS, invalid_reasoning_parser
from llmsim.settings.tls import tls_conflict

__all__ = [
    "DURATION_FIELDS",
    "ENV_PREFIX",
    "FAILURE_TYPES",
    "LAYER_FIELDS",
    "MAX_DATA_PARALLEL_SIZE",
    "MAX_PORT",
    "MAX_STD_DEV_RATIO",
    "MAX_STEP_DURATION",
    "SECRET_FIELDS",
    "SIZE_FIELDS",
    "ByteSize",
    "ConfigError",
    "DataParallelBackend",
    "Duration",
    "FailureType",
    "JsonNames",
    "Names",
    "Settings",
    "StepDuration",
    "env_name",
    "option_flag",
]

ENV_PREFIX = "LLMSIM_"


class ConfigError(Exception):
    """Settings could not be built; each line names an option and the reason."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class Settings(
    MetricsKvFields, TimingFields, AnswerFields, ModelFields, TlsFields, ServerFields, BaseSettings
):
    """Everything that shapes a running llmsim server.

    The fields are declared in the group mixins of :mod:`llmsim.settings.groups`; pydantic
    collects them from the last base to the first, so the bases are listed in reverse of the
    order the options are documented in (server first).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        case_sensitive=False,
        validate_default=True,
        populate_by_name=True,
    )

    @model_validator(mode="after")
    def _check_kv_features(self) -> Settings:
        for mean_name in ("kv_cache_transfer_latency", "kv_cache_transfer_time_per_token"):
            mean, std = getattr(self, mean_name), getattr(self, f"{mean_name}_std_dev")
            if std > MAX_STD_DEV_RATIO * mean + 1e-12:
                raise _cross_field_error(
                    f"{mean_name}_std_dev", f"must be at most 30% of {mean_name.replace('_', '-')}"
                )
        events = self.kv_events_config
        if events is not None and events.publishes and missing_kv_events_packages():
            raise _cross_field_error(
                "kv_events_config", f"publishing KV events needs the extra: {KV_EVENTS_EXTRA}"
            )
        if self.prefix_caching_hash_algo.startswith("xxhash") and xxhash_missing():
            raise _cross_field_error(
                "prefix_caching_hash_algo", f"xxhash needs the extra: {KV_EVENTS_EXTRA}"
            )
        return self

    @field_validator("reasoning_parser")
    @classmethod
    def _known_reasoning_parser(cls, value: str | None) -> str | None:
        if value is not None and value not in REASONING_PARSERS:
            raise ValueError(invalid_reasoning_parser(value))
        return value

    @field_validator("host")
    @classmethod
    def _host_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        jittered = ["inter_token_latency"]
        if self.latency_model == "constant":
            jittered.append("time_to_first_token")
        for mean_name in jittered:
            mean = getattr(self, mean_name)
            std = getattr(self, f"{mean_name}_std_dev")
            if std > MAX_STD_DEV_RATIO * mean + 1e-12:
                raise _cross_field_error(
                    f"{mean_name}_std_dev",
                    f"must be at most 30% of {mean_name.replace('_', '-')}",
                )
        keeps_blocks = self.latency_model == "step" or self.kv_blocks
        if keeps_blocks and self.kv_cache_size < self.max_model_len:
            what = "the step latency model" if self.latency_model == "step" else "kv-blocks"
            raise _cross_field_error(
                "kv_cache_size",
                f"{what} needs kv-cache-size ({self.kv_cache_size} tokens) "
                f"of at least max-model-len ({self.max_model_len} tokens)",
            )
        problem = data_parallel_problem(self)
        if problem is not None:
            raise _cross_field_error(*problem)
        ports = data_parallel_layout(self).port_count
        if self.uds is not None and ports > 1:
            raise _cross_field_error(
                "uds", f"one socket serves one server, not {ports} data-parallel servers"
            )
        last_port = self.port + ports - 1
        if self.port and last_port > MAX_PORT:
            raise _cross_field_error(
                "data_parallel_size",
                f"ports {self.port}..{last_port} go past {MAX_PORT}; lower the port",
            )
        last_grpc_port = (self.grpc_port or 0) + ports - 1
        if self.grpc_port and last_grpc_port > MAX_PORT:
            raise _cross_field_error(
                "grpc_port",
                f"gRPC ports {self.grpc_port}..{last_grpc_port} go past {MAX_PORT}; lower the port",
            )
        if self.long_prefill_token_threshold > self.max_model_len:  # vLLM's words
            raise _cross_field_error(
                "long_prefill_token_threshold",
                f"long_prefill_token_threshold ({self.long_prefill_token_threshold}) cannot be "
                f"greater than the max_model_len ({self.max_model_len}).",
            )
        if not self.enable_chunked_prefill and self.max_num_batched_tokens < self.max_model_len:
            raise _cross_field_error(
                "max_num_batched_tokens",
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) is smaller than "
                f"max_model_len ({self.max_model_len}): without chunked prefill longer "
                "prompts could never run. Increase max_num_batched_tokens or decrease "
                "max_model_len.",
            )
        if (active := self.max_num_active_seqs) and active > self.max_running_requests:
            raise _cross_field_error(  # vLLM's words
                "max_num_active_seqs",
                f"max_num_active_seqs ({active}) cannot be greater than max_num_seqs "
                f"({self.max_running_requests}).",
            )
        if self.grpc_only and self.grpc_port is not None:  # vLLM's words
            raise _cross_field_error(
                "grpc_port",
                "--grpc and --grpc-port are mutually exclusive: --grpc serves gRPC on --port "
                "instead of HTTP, --grpc-port serves it beside HTTP",
            )
        tls_problem = tls_conflict(self)
        if tls_problem is not None:
            raise _cross_field_error(*tls_problem)
        if self.replay_strict and self.replay is None:
            raise _cross_field_error("replay_strict", "needs a recording to replay (--replay)")
        if not self.failure_types and self.failure_injection_rate > 0:
            raise _cross_field_error("failure_types", "must name at least one type")
        if self.max_cpu_loras is None:
            self.max_cpu_loras = self.max_loras
        elif self.max_cpu_loras < self.max_loras:
            raise _cross_field_error("max_cpu_loras", "must be at least max-loras")
        names = [*self.lora, *(module.name for module in self.lora_modules)]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise _cross_field_error("lora", f"adapter names given twice: {', '.join(duplicates)}")
        clashes = sorted(set(names) & set(self.served_names))
        if clashes:
            raise _cross_field_error(
                "lora", f"adapter names clash with the model: {', '.join(clashes)}"
            )
        return self

    # -- derived views ----------------------------------------------------------
    @property
    def running_limit(self) -> int:
        """The most sequences that run at once (``--max-num-active-seqs`` when set)."""
        return self.max_num_active_seqs or self.max_running_requests

    @property
    def step_token_budget(self) -> int:
        """The most tokens one step schedules (``--max-num-scheduled-tokens`` when set)."""
        return self.max_num_scheduled_tokens or self.max_num_batched_tokens

    @property
    def served_names(self) -> list[str]:
        """Names the API accepts for the base model; the first is reported."""
        return self.served_model_name or [self.model]

    @property
    def model_label(self) -> str:
        """The ``model_name`` label vLLM puts on engine metrics."""
        return self.served_names[0]

    @property
    def access_log_enabled(self) -> bool:
        """The access log is written unless turned off or the dashboard is shown."""
        return self.access_log and not self.dashboard

    @property
    def cpu_lora_capacity(self) -> int:
        return self.max_cpu_loras if self.max_cpu_loras is not None else self.max_loras

    @property
    def adapters(self) -> list[LoraModule]:
        """Every adapter known at start-up, ``--lora`` names first."""
        return [LoraModule(name=name, path=name) for name in self.lora] + list(self.lora_modules)


def _cross_field_error(field: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(
        "cross_field", "{field}: {reason}", {"field": field, "reason": message}
    )


def option_flag(field: str) -> str:
    """The CLI flag for a settings field."""
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _fields_marked(marker: str) -> frozenset[str]:
    return frozenset(
        name
        for name, info in Settings.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(marker)
    )


DURATION_FIELDS = _fields_marked("duration")
SIZE_FIELDS = _fields_marked("size")
SECRET_FIELDS = frozenset({"api_key"})
LAYER_FIELDS = frozenset({"config", "profile"})
"""Fields that choose settings layers; they cannot be set from inside a layer (a file)."""
