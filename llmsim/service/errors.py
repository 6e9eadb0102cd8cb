"""What can go wrong between a request and the engine, free of any wire protocol.

Each kind is what a door needs to choose its status: HTTP answers ``status`` (vLLM's codes),
gRPC maps the kind to a ``grpc.StatusCode`` as vLLM's gRPC server does.
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    INVALID = "invalid"
    """The request cannot be served as asked (HTTP 400, gRPC INVALID_ARGUMENT)."""
    NOT_FOUND = "not_found"
    """It names a model or adapter the server does not have (404, NOT_FOUND)."""
    OVERLOADED = "overloaded"
    """The waiting queue is full (429, RESOURCE_EXHAUSTED)."""
    UNAVAILABLE = "unavailable"
    """The server is starting or draining (503, UNAVAILABLE)."""
    FAULT = "fault"
    """An injected failure: its HTTP ``status`` says what it imitates."""


class ServiceError(Exception):
    """A refusal with vLLM's message; ``param`` names the field at fault when there is one."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        param: str | None = None,
        status: int | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.status = status if status is not None else DEFAULT_STATUS[kind]
        self.type = type
        """The error type HTTP reports (a response rule may name one); None: from the status."""


DEFAULT_STATUS = {
    ErrorKind.INVALID: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.OVERLOADED: 429,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.FAULT: 500,
}


def invalid(message: str, param: str | None = None) -> ServiceError:
    return ServiceError(ErrorKind.INVALID, message, param)
