"""Annotated field types and input parsers shared by the settings groups."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_settings import NoDecode

from llmsim.settings.fake_metrics import FakeMetricsError, load_spec
from llmsim.settings.lora_modules import split_names, unique
from llmsim.settings.responses import ResponsesError, load_rules
from llmsim.settings.units import MAX_DURATION, parse_duration, parse_size

MAX_STD_DEV_RATIO = 0.3
MAX_DATA_PARALLEL_SIZE = 16
MAX_PORT = 65535
MAX_STEP_DURATION = 1.0
"""Longest per-token or per-sequence cost, in seconds (real ones are microseconds)."""

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(le=MAX_DURATION, json_schema_extra={"duration": True}),
]
StepDuration = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(le=MAX_STEP_DURATION, json_schema_extra={"duration": True}),
]
"""A time per token or per sequence: it is multiplied, so its bound is lower."""
ByteSize = Annotated[int, BeforeValidator(parse_size), Field(json_schema_extra={"size": True})]

FailureType = Literal[
    "rate_limit",
    "invalid_api_key",
    "context_length",
    "server_error",
    "invalid_request",
    "model_not_found",
]
FAILURE_TYPES: tuple[FailureType, ...] = get_args(FailureType)
DataParallelBackend = Literal["mp", "inprocess", "workers"]


Names = Annotated[list[str], NoDecode, BeforeValidator(split_names), AfterValidator(unique)]


def json_object_config(value: Any) -> Any:
    """Inline JSON (flag, environment) or a table (TOML); empty means not configured."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON: {exc.msg}") from None
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object")
    return value


def load_fake_metrics_input(value: Any) -> Any:
    """A path to a JSON or TOML file, inline JSON, or (from a profile) a table."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return load_spec(value)
    except FakeMetricsError as exc:
        raise ValueError(exc.message) from None


def load_responses_input(value: Any) -> Any:
    """``builtin:tasks``, a TOML file of rules or (from a profile) a ``[responses]`` table."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return load_rules(value)
    except ResponsesError as exc:
        raise ValueError(str(exc)) from None


def level_name(value: Any) -> Any:
    """vLLM spells levels in capitals (``INFO``, ``WARN``; ``NOTSET``, everything, reads as
    ``debug``)."""
    if isinstance(value, str):
        value = value.strip().lower()
        return {"warn": "warning", "notset": "debug"}.get(value, value)
    return value


def json_list_or_names(value: Any) -> Any:
    """vLLM's JSON list (``'["*"]'``), or names as elsewhere (``a,b``, repeated flags)."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list: {exc.msg}") from None
    if isinstance(value, list) and len(value) == 1:
        return json_list_or_names(value[0])
    return split_names(value)


JsonNames = Annotated[list[str], NoDecode, BeforeValidator(json_list_or_names)]


def as_list(value: Any) -> Any:
    """One text (from the environment or a single flag) is a list of one."""
    return [value] if isinstance(value, str) else value


def existing_file(value: Path | None) -> Path | None:
    if value is not None and not value.is_file():
        raise ValueError(f"file not found: {value}")
    return value


def http_url(value: str | None) -> str | None:
    if value is None:
        return None
    scheme, _, rest = value.strip().partition("://")
    if scheme not in ("http", "https") or not rest.strip("/"):
        raise ValueError(f"expected an http:// or https:// URL, not {value!r}")
    return value.strip().rstrip("/")


BUCKET_FAMILIES = (
    "request_latency",
    "time_to_first_token",
    "inter_token_latency",
    "iteration_tokens",
    "request_params_n",
    "request_num_preemptions",
    "request_tokens",
    "kv_cache_residency",
)
"""vLLM's histogram bucket families: the keys of ``--custom-histogram-buckets``."""


def histogram_buckets(value: Any) -> Any:
    """vLLM's checks of ``--custom-histogram-buckets``, in its words: known families, each a
    non-empty, strictly increasing list of finite bounds above 0 (booleans are not numbers)."""
    value = json_object_config(value)
    if not isinstance(value, dict):
        return value
    for family, bounds in value.items():
        name = f"custom_histogram_buckets[{family!r}]"
        if family not in BUCKET_FAMILIES:
            raise ValueError(
                f"custom_histogram_buckets: unknown bucket family {family!r}; "
                f"known families: {sorted(BUCKET_FAMILIES)}"
            )
        if not isinstance(bounds, list) or not bounds:
            raise ValueError(f"{name}: bucket list must not be empty")
        for bound in bounds:
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                raise ValueError(f"{name}: bound {bound!r} must be a number, not a boolean")
            if not math.isfinite(bound) or bound <= 0:
                raise ValueError(f"{name}: bound {bound!r} must be finite and greater than 0")
        if any(a >= b for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"{name}: bounds {bounds} must be strictly increasing")
    return value
