"""The part of a running server's configuration that can change without a restart.

``POST /admin/config`` and ``POST /admin/metrics`` end up here. An update is validated
with the same :class:`~llmsim.settings.model.Settings` model as the command line (so cross-field
rules hold and errors read alike), then new immutable pieces — latency model, fault
injector, mode, metric overrides — replace the old ones in one synchronous step. On the
single event loop a request therefore sees the old or the new configuration, never a mix;
sequences already running keep the latency model they started with.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import ValidationError

from llmsim.observability.metrics import Metrics
from llmsim.runtime.faults import FaultInjector
from llmsim.settings.fake_metrics import FakeMetrics
from llmsim.settings.model import DURATION_FIELDS, SECRET_FIELDS, Settings, option_flag
from llmsim.settings.renamed import migrate
from llmsim.settings.sources import field_errors, toml_value, validate_exactly

RUNTIME_FIELDS: tuple[str, ...] = (
    "latency_model",
    "time_to_first_token",
    "time_to_first_token_std_dev",
    "frontend_latency",
    "frontend_serial_time",
    "frontend_time_per_running_request",
    "prefill_time_per_token",
    "inter_token_latency",
    "inter_token_latency_std_dev",
    "time_factor_under_load",
    "lora_load_latency",
    "failure_injection_rate",
    "failure_types",
    "stream_cut_rate",
    "mode",
    "decode_time_per_sequence",
    "context_time_per_token",
    "max_num_batched_tokens",
    "kv_cache_transfer_latency",
    "kv_cache_transfer_latency_std_dev",
    "kv_cache_transfer_time_per_token",
    "kv_cache_transfer_time_per_token_std_dev",
)
"""Settings ``POST /admin/config`` may change. Everything else needs a restart."""

CHANGED_ELSEWHERE = {"fake_metrics": "POST /admin/metrics", "responses": "POST /admin/responses"}
"""Settings that change at run time through another route."""

MASK = "********"


class RuntimeUpdateError(ValueError):
    """An update was refused; nothing changed. ``param`` names the offending setting."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _adjustable_list() -> str:
    return ", ".join(RUNTIME_FIELDS)


def _check_keys(changes: Mapping[str, Any]) -> None:
    if not changes:
        raise RuntimeUpdateError(
            f"No settings given. Adjustable at run time: {_adjustable_list()}."
        )
    for key, value in changes.items():
        if key not in Settings.model_fields:
            raise RuntimeUpdateError(
                f"Unknown setting '{key}'. Adjustable at run time: {_adjustable_list()}.", key
            )
        if key in CHANGED_ELSEWHERE:
            raise RuntimeUpdateError(
                f"'{key}' is changed at run time with {CHANGED_ELSEWHERE[key]}, not here.", key
            )
        if key not in RUNTIME_FIELDS:
            raise RuntimeUpdateError(
                f"'{key}' cannot be changed at run time; restart the server with "
                f"{option_flag(key)}. Adjustable at run time: {_adjustable_list()}.",
                key,
            )
        if isinstance(value, bool):
            raise RuntimeUpdateError(f"{key}: a boolean is not a valid value", key)


def _check_latency_model(current: Settings, changes: Mapping[str, Any]) -> None:
    """The step engine is built at start-up: switching into or out of it needs a restart."""
    wanted = changes.get("latency_model", current.latency_model)
    if (wanted == "step") != (current.latency_model == "step"):
        raise RuntimeUpdateError(
            "latency_model cannot be switched to or from 'step' at run time; restart the "
            "server with --latency-model.",
            "latency_model",
        )


def _as_input(name: str, value: Any) -> Any:
    """A validated value in a form that validates to itself again.

    Durations are stored in seconds but a bare number means milliseconds on input, so
    they go back as exact ``"<seconds>s"`` text.
    """
    if name in DURATION_FIELDS and isinstance(value, float):
        return f"{value!r}s"
    return value


def validate_update(current: Settings, changes: Mapping[str, Any]) -> Settings:
    """``current`` with ``changes`` applied and validated as a whole, or RuntimeUpdateError.

    A renamed setting is accepted under its old name.
    """
    changes, _ = migrate(changes, "POST /admin/config")
    _check_keys(changes)
    _check_latency_model(current, changes)
    values = {name: _as_input(name, getattr(current, name)) for name in Settings.model_fields}
    values.update(changes)
    try:
        return validate_exactly(values)
    except ValidationError as exc:
        problems = field_errors(exc)
        message = "; ".join(f"{field}: {reason}" for field, reason in problems)
        raise RuntimeUpdateError(message, problems[0][0]) from None


def settings_view(settings: Settings) -> dict[str, Any]:
    """Every setting as a user writes it (durations as ``500ms``), secrets masked."""
    view: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            view[name] = None
        elif name in SECRET_FIELDS:
            view[name] = MASK
        else:
            view[name] = toml_value(name, value)
    return view


class Reconfigurable(Protocol):
    """An engine, or all the data-parallel engines of a server."""

    def reconfigure(self, settings: Settings) -> None: ...


class Runtime:
    """Owns the live configuration of one server and swaps it as a whole."""

    def __init__(self, settings: Settings, engine: Reconfigurable, metrics: Metrics) -> None:
        self._settings = settings
        self._engine = engine
        self._metrics = metrics
        self._fault_rng = random.Random(None if settings.seed is None else settings.seed + 2)
        self._faults = self._fault_injector(settings)

    @property
    def settings(self) -> Settings:
        """The effective settings, including runtime changes."""
        return self._settings

    @property
    def faults(self) -> FaultInjector:
        """The fault injector for requests starting now; hold it for a request's lifetime."""
        return self._faults

    def update(self, changes: Mapping[str, Any]) -> list[str]:
        """Apply a partial update of :data:`RUNTIME_FIELDS`; return the settings that changed."""
        new = validate_update(self._settings, changes)
        faults = self._fault_injector(new)
        old = self._settings
        # One synchronous step: no request can run between these assignments.
        self._engine.reconfigure(new)
        self._settings, self._faults = new, faults
        return [name for name in RUNTIME_FIELDS if getattr(old, name) != getattr(new, name)]

    def set_fake_metrics(self, spec: FakeMetrics | None) -> None:
        """Replace the metric overrides (None or an empty spec restores live values)."""
        if spec is not None and spec.is_empty:
            spec = None
        self._metrics.set_overrides(spec)
        self._settings = self._settings.model_copy(update={"fake_metrics": spec})

    def _fault_injector(self, settings: Settings) -> FaultInjector:
        return FaultInjector(
            rate_percent=settings.failure_injection_rate,
            types=settings.failure_types,
            stream_cut_percent=settings.stream_cut_rate,
            max_model_len=settings.max_model_len,
            rng=self._fault_rng,
            on_inject=self._metrics.injected_failure,
        )
