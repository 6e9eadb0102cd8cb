"""Where log records go and what they look like: rich text for people, JSON for shippers.

- ``text``: server messages through rich (above the dashboard when it is shown); access
  lines as plain ``[HH:MM:SS] INFO     ...`` lines in the same layout.
- ``json``: every record, access lines included, as one JSON object per line on
  standard error with the keys ``time`` (ISO-8601, UTC), ``level``, ``logger`` and
  ``message``, plus the structured fields the record carries (see :data:`FIELDS`).

Access lines skip the :mod:`logging` machinery (:class:`AccessWriter`): a log record per
request cost a tenth of a zero-latency request's CPU time. They still honour the level of
the ``llmsim.access`` logger and use the same format as every other record.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from llmsim.settings.model import Settings

ACCESS_LOGGER = "llmsim.access"
FIELDS = "llmsim_fields"
"""Name of the ``extra`` attribute holding a record's structured fields (a dict)."""
TEXT_TIME_FORMAT = "[%X]"
TEXT_LEVEL_WIDTH = 8


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


class TimeStamps:
    """Formats record times, redoing the calendar arithmetic once a second, not per line."""

    def __init__(self) -> None:
        self._second = -1
        self._iso = ""
        self._clock = ""

    def _refresh(self, created: float) -> int:
        second = int(created)
        if second != self._second:
            self._second = second
            moment = dt.datetime.fromtimestamp(second, tz=dt.timezone.utc)
            self._iso = moment.strftime("%Y-%m-%dT%H:%M:%S")
            self._clock = time.strftime(TEXT_TIME_FORMAT, time.localtime(second))
        return second

    def iso(self, created: float) -> str:
        """``2026-11-23T14:02:11.148Z``."""
        second = self._refresh(created)
        return f"{self._iso}.{int((created - second) * 1000):03d}Z"

    def clock(self, created: float) -> str:
        """``[14:02:11]``, local time, as rich prints it."""
        self._refresh(created)
        return self._clock


class JsonLines:
    """Builds the one-line JSON object every record becomes with ``--log-format json``."""

    def __init__(self) -> None:
        self._dumps = _json_dumps()
        self._stamps = TimeStamps()

    def line(
        self,
        created: float,
        level: str,
        logger: str,
        message: str,
        fields: dict[str, Any] | None = None,
    ) -> str:
        entry: dict[str, Any] = {
            "time": self._stamps.iso(created),
            "level": level,
            "logger": logger,
            "message": message,
        }
        if fields:
            for key, value in fields.items():
                entry.setdefault(key, value)
        return self._dumps(entry)


class JsonFormatter(logging.Formatter):
    """One JSON object per record with fixed keys first, then the record's fields."""

    def __init__(self) -> None:
        super().__init__()
        self._lines = JsonLines()

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, FIELDS, None)
        extra = dict(fields) if isinstance(fields, dict) else {}
        if record.exc_info:
            extra["exception"] = self.formatException(record.exc_info)
        return self._lines.line(
            record.created, record.levelname.lower(), record.name, record.getMessage(), extra
        )


class AccessWriter:
    """Writes access lines straight to standard error, in the configured format.

    Lines are gathered during one turn of the event loop and written together at its end:
    under load one system call carries many lines instead of one each.
    """

    MAX_PENDING = 256

    def __init__(self, log_format: str) -> None:
        self._json = JsonLines() if log_format == "json" else None
        self._stamps = TimeStamps()
        self._pending: list[str] = []

    def write(self, line: str, fields: dict[str, Any]) -> None:
        now = time.time()
        if self._json is not None:
            text = self._json.line(now, "info", ACCESS_LOGGER, line, fields) + "\n"
        else:
            text = f"{self._stamps.clock(now)} {'INFO':<{TEXT_LEVEL_WIDTH}} {line}\n"
        pending = self._pending
        pending.append(text)
        if len(pending) >= self.MAX_PENDING:
            self.flush()
        elif len(pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (called from plain code): write now
                self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        stream = sys.stderr
        stream.write(text)
        stream.flush()


class CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record arrives.

    While the dashboard is shown on a terminal, rich swaps ``sys.stderr`` for a proxy that
    prints above the live view; a handler holding the original stream would draw through it.
    """

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(settings: Settings, console: Console) -> None:
    """Install the handlers for ``settings.log_format``; ``console`` is the dashboard's."""
    handler: logging.Handler
    if settings.log_format == "json":
        handler = CurrentStderrHandler()
        handler.setFormatter(JsonFormatter())
    else:
        from rich.logging import RichHandler

        handler = RichHandler(
            console=console if settings.dashboard else Console(stderr=True),
            show_path=False,
            rich_tracebacks=False,
        )
        handler.setFormatter(logging.Formatter("%(message)s", datefmt=TEXT_TIME_FORMAT))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)


def log_with_fields(
    logger: logging.Logger, level: int, message: str, fields: dict[str, Any]
) -> None:
    """Log ``message``; the JSON format adds ``fields`` as keys of its object."""
    logger.log(level, message, extra={FIELDS: fields})
