"""Where log records go and what they look like: rich text for people, JSON for shippers.

- ``text``: server messages through rich (above the dashboard when it is shown); access
  lines through a plain formatter, because a rich render per request would cost more
  than serving the request.
- ``json``: every record, access lines included, as one JSON object per line on
  standard error with the keys ``time`` (ISO-8601, UTC), ``level``, ``logger`` and
  ``message``, plus the structured fields the record carries (see :data:`FIELDS`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console

from llmsim.config import Settings

ACCESS_LOGGER = "llmsim.access"
FIELDS = "llmsim_fields"
"""Name of the ``extra`` attribute holding a record's structured fields (a dict)."""
TEXT_ACCESS_FORMAT = "%(asctime)s %(levelname)-8s %(message)s"
TEXT_TIME_FORMAT = "[%X]"


def _json_dumps() -> Callable[[dict[str, Any]], str]:
    """orjson when installed (``llmsim[fast]``); anything it cannot encode becomes text."""
    try:
        import orjson
    except ImportError:

        def dumps_stdlib(entry: dict[str, Any]) -> str:
            return json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str)

        return dumps_stdlib

    def dumps_orjson(entry: dict[str, Any]) -> str:
        return str(orjson.dumps(entry, default=str).decode())

    return dumps_orjson


class JsonFormatter(logging.Formatter):
    """One JSON object per record with fixed keys first, then the record's fields."""

    def __init__(self) -> None:
        super().__init__()
        self._dumps = _json_dumps()

    def format(self, record: logging.LogRecord) -> str:
        moment = dt.datetime.fromtimestamp(record.created, tz=dt.timezone.utc)
        entry: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self._dumps(entry)


class CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record arrives.

    While the dashboard is shown, rich swaps ``sys.stderr`` for a proxy that prints above
    the live view; a handler holding the original stream would draw through it.
    """

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(settings: Settings, console: Console) -> None:
    """Install the handlers for ``settings.log_format``; ``console`` is the dashboard's."""
    access = logging.getLogger(ACCESS_LOGGER)
    for old in list(access.handlers):
        access.removeHandler(old)
    handler: logging.Handler
    if settings.log_format == "json":
        handler = CurrentStderrHandler()
        handler.setFormatter(JsonFormatter())
        access.propagate = True
    else:
        from rich.logging import RichHandler

        handler = RichHandler(
            console=console if settings.dashboard else Console(stderr=True),
            show_path=False,
            rich_tracebacks=False,
        )
        handler.setFormatter(logging.Formatter("%(message)s", datefmt=TEXT_TIME_FORMAT))
        plain = CurrentStderrHandler()
        plain.setFormatter(logging.Formatter(TEXT_ACCESS_FORMAT, datefmt=TEXT_TIME_FORMAT))
        access.addHandler(plain)
        access.propagate = False
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    # No format shows threads or processes; not looking them up saves a third of the cost
    # of a record, which matters for one access record per request.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def log_with_fields(
    logger: logging.Logger, level: int, message: str, fields: dict[str, Any]
) -> None:
    """Log ``message``; the JSON format adds ``fields`` as keys of its object."""
    logger.log(level, message, extra={FIELDS: fields})
