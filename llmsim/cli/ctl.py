"""``llmsim ctl``: change a running server from a shell or a CI script, through ``/admin/*``.

A plain synchronous HTTP client (the standard library's urllib), so it adds no
dependency. Exit status: 0 on success, 1 when the server refuses the change or cannot
be reached, 2 when the command line itself is wrong.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from llmsim.settings.fake_metrics import FakeMetricsError, read_spec_source

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT = 10.0

ctl_app = typer.Typer(
    help="Inspect and change a running llmsim server: runtime settings and metric overrides.",
    no_args_is_help=True,
)
metrics_app = typer.Typer(
    help="Pin scheduler metrics to fixed values or time functions, show or clear the pins.",
    no_args_is_help=True,
)
ctl_app.add_typer(metrics_app, name="metrics")

out = Console()
err = Console(stderr=True)

Url = Annotated[
    str,
    typer.Option("--url", envvar="LLMSIM_URL", help="Base URL of the server.", metavar="URL"),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="LLMSIM_API_KEY",
        help="Bearer key, when the server was started with --api-key.",
        metavar="KEY",
        show_default=False,
    ),
]
AsJson = Annotated[
    bool, typer.Option("--json", help="Print the server's JSON answer instead of a table.")
]


class CtlError(Exception):
    """Something to tell the user on one line before exiting with ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _fail(exc: CtlError) -> NoReturn:
    err.print(f"[bold red]error:[/bold red] {exc.message}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.status)


def _endpoint(url: str, path: str) -> str:
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CtlError(f"--url must be an http:// or https:// URL, not {url!r}", 2)
    return url.strip().rstrip("/") + path


def call(method: str, url: str, path: str, api_key: str | None, body: Any = None) -> dict[str, Any]:
    """One request to the admin API; the JSON answer, or :class:`CtlError`."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(_endpoint(url, path), data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise CtlError(f"{_server_message(exc)} (HTTP {exc.code})") from None
    except urllib.error.URLError as exc:
        raise CtlError(f"cannot reach {url}: {exc.reason}") from None
    except (OSError, TimeoutError) as exc:
        raise CtlError(f"cannot reach {url}: {exc}") from None
    except ValueError:
        raise CtlError(f"{url} did not answer with JSON; is it an llmsim server?") from None
    if not isinstance(answer, dict):
        raise CtlError(f"{url} gave an unexpected answer; is it an llmsim server?")
    return answer


def _server_message(exc: urllib.error.HTTPError) -> str:
    """The ``message`` of vLLM's error shape, or the HTTP reason."""
    try:
        message = json.loads(exc.read())["error"]["message"]
    except (ValueError, KeyError, TypeError, OSError):
        return str(exc.reason)
    return str(message)


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _print_json(answer: dict[str, Any]) -> None:
    out.print_json(json.dumps(answer))


def call_or_exit(
    method: str, url: str, path: str, api_key: str | None, body: Any = None
) -> dict[str, Any]:
    """:func:`call`, or the one-line error and its exit status."""
    try:
        return call(method, url, path, api_key, body)
    except CtlError as exc:
        _fail(exc)


def print_answer(answer: dict[str, Any], as_json: bool, render: Callable[[], None]) -> None:
    """The raw JSON with ``--json``, otherwise what ``render`` prints."""
    if as_json:
        _print_json(answer)
    else:
        render()


def parse_assignments(assignments: list[str]) -> dict[str, str]:
    """``["time-to-first-token=500ms"]`` -> ``{"time_to_first_token": "500ms"}``.

    Values stay text: the server parses them exactly as it parses command-line flags.
    """
    changes: dict[str, str] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise CtlError(f"expected KEY=VALUE, got {item!r}", 2)
        changes[key] = value.strip()
    return changes


# -- settings -----------------------------------------------------------------------


@ctl_app.command("get")
def get(url: Url = DEFAULT_URL, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Print the server's effective settings, marking the ones `ctl set` can change."""
    answer = call_or_exit("GET", url, "/admin/config", api_key)
    if as_json:
        _print_json(answer)
        return
    adjustable = set(answer.get("adjustable", []))
    table = Table(title=f"llmsim settings at {url}", title_justify="left")
    table.add_column("setting", style="cyan")
    table.add_column("value")
    table.add_column("adjustable", style="dim")
    for name, value in answer.get("settings", {}).items():
        table.add_row(name, _show(value), "yes" if name in adjustable else "")
    out.print(table)


@ctl_app.command("set")
def set_(
    assignments: Annotated[
        list[str],
        typer.Argument(
            metavar="KEY=VALUE...",
            help="Settings to change, e.g. time_to_first_token=500ms mode=echo "
            "(same syntax as the serve flags; dashes or underscores).",
        ),
    ],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Change runtime settings of a running server, all at once or not at all."""
    try:
        changes = parse_assignments(assignments)
        answer = call("POST", url, "/admin/config", api_key, changes)
    except CtlError as exc:
        _fail(exc)
    if as_json:
        _print_json(answer)
        return
    changed = set(answer.get("changed", []))
    settings = answer.get("settings", {})
    table = Table(title=f"llmsim settings at {url}", title_justify="left")
    table.add_column("setting", style="cyan")
    table.add_column("value")
    table.add_column("", style="dim")
    for name in changes:
        table.add_row(name, _show(settings.get(name)), "changed" if name in changed else "same")
    out.print(table)


# -- metric overrides ---------------------------------------------------------------


def _print_overrides(answer: dict[str, Any], url: str) -> None:
    overrides = answer.get("overrides")
    if not overrides:
        out.print(f"no metric overrides at {url}: all metrics are live")
        return
    current = answer.get("current", {})
    table = Table(title=f"llmsim metric overrides at {url}", title_justify="left")
    table.add_column("metric", style="cyan")
    table.add_column("override")
    table.add_column("now")
    for name, value in overrides.items():
        table.add_row(name, _show(value), _now(current.get(name, "")))
    out.print(table)


def _now(value: Any) -> str:
    """A faked series' current value: a number, or a histogram's count and sum."""
    if isinstance(value, list):
        return ", ".join(_now(item) for item in value)
    if isinstance(value, dict) and "count" in value:
        return f"count {value['count']}, sum {value['sum']:.6g}"
    if isinstance(value, dict) and "value" in value:
        return _show(value["value"])
    return _show(value)


@metrics_app.command("get")
def metrics_get(url: Url = DEFAULT_URL, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Show the metric overrides in force and their current values."""
    answer = call_or_exit("GET", url, "/admin/metrics", api_key)
    print_answer(answer, as_json, lambda: _print_overrides(answer, url))


@metrics_app.command("set")
def metrics_set(
    spec: Annotated[
        str,
        typer.Argument(
            metavar="JSON|FILE",
            help="Inline JSON, or a JSON or TOML (*.toml) file; replaces every override.",
        ),
    ],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Pin metrics, e.g. '{"num_requests_waiting": 12}'; time functions restart now."""
    try:
        data = read_spec_source(spec)
    except FakeMetricsError as exc:
        _fail(CtlError(exc.message, 2))
    answer = call_or_exit("POST", url, "/admin/metrics", api_key, data)
    print_answer(answer, as_json, lambda: _print_overrides(answer, url))


@metrics_app.command("clear")
def metrics_clear(url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """Remove every metric override: the metrics report live values again."""
    call_or_exit("DELETE", url, "/admin/metrics", api_key)
    out.print(f"metric overrides cleared at {url}: all metrics are live")
