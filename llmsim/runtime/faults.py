"""Deliberate failures for testing client resilience: injected errors and cut streams.

Injected errors are decided per inference request, from ``--failure-injection-rate``
and ``--failure-types``, or forced with an ``X-Return-Error: <status>`` request header.
They are counted apart from vLLM's metrics so they never distort them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

FORCE_HEADER = "X-Return-Error"

_STATUS_TO_TYPE = {
    429: "rate_limit",
    401: "invalid_api_key",
    404: "model_not_found",
    503: "server_error",
    400: "invalid_request",
}


@dataclass(frozen=True, slots=True)
class InjectedFault:
    type: str
    status: int
    message: str
    param: str | None = None


class InvalidForceHeaderError(ValueError):
    """The ``X-Return-Error`` header does not name an error status."""


def describe(fault_type: str, status: int, model: str, max_model_len: int) -> InjectedFault:
    """The error a real server would give for ``fault_type``, marked as injected."""
    if fault_type == "rate_limit":
        return InjectedFault(fault_type, 429, "Rate limit reached for requests (injected failure).")
    if fault_type == "invalid_api_key":
        return InjectedFault(fault_type, 401, "Incorrect API key provided (injected failure).")
    if fault_type == "context_length":
        return InjectedFault(
            fault_type,
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, your "
            f"request has {max_model_len + 1} input tokens. Please reduce the length of the "
            "input messages (injected failure).",
            "messages",
        )
    if fault_type == "server_error":
        return InjectedFault(
            fault_type, 503, "The server is temporarily unavailable (injected failure)."
        )
    if fault_type == "model_not_found":
        return InjectedFault(fault_type, 404, f"The model `{model}` does not exist.", "model")
    if fault_type == "invalid_request":
        return InjectedFault(fault_type, 400, "Invalid request (injected failure).")
    return InjectedFault("forced", status, f"Injected error with status {status}.")


class FaultInjector:
    def __init__(
        self,
        *,
        rate_percent: float,
        types: Sequence[str],
        stream_cut_percent: float,
        max_model_len: int,
        rng: random.Random,
        on_inject: Callable[[str], None],
    ) -> None:
        self._rate = rate_percent / 100.0
        self._types = tuple(types)
        self.injects = self._rate > 0 and bool(self._types)
        """Whether a request may fail without asking for it (a forced fault always may)."""
        self._cut_rate = stream_cut_percent / 100.0
        self._max_model_len = max_model_len
        self._rng = rng
        self._on_inject = on_inject

    def pick(self, forced: str | None, model: str) -> InjectedFault | None:
        """The fault to answer this request with, if any."""
        if forced is not None:
            status = _parse_forced_status(forced)
            fault_type = _STATUS_TO_TYPE.get(status, "forced")
        elif self.injects and self._rng.random() < self._rate:
            fault_type = self._rng.choice(self._types)
            status = 0
        else:
            return None
        fault = describe(fault_type, status, model, self._max_model_len)
        self._on_inject(fault.type)
        return fault

    def stream_cut_after(self, tokens: int) -> int | None:
        """How many tokens to stream before cutting the connection (None: do not cut)."""
        if self._cut_rate <= 0 or tokens < 1 or self._rng.random() >= self._cut_rate:
            return None
        return self._rng.randint(0, max(tokens - 1, 0))

    def stream_cut(self) -> None:
        self._on_inject("stream_cut")


def _parse_forced_status(value: str) -> int:
    try:
        status = int(value.strip())
    except ValueError:
        raise InvalidForceHeaderError(value) from None
    if not 400 <= status <= 599:
        raise InvalidForceHeaderError(value)
    return status
