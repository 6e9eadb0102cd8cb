"""``llmsim ctl responses``: show, replace or clear a running server's response rules."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from llmsim.cli.ctl import (
    DEFAULT_URL,
    ApiKey,
    AsJson,
    CtlError,
    Url,
    _fail,
    call_or_exit,
    out,
    print_answer,
)
from llmsim.settings.responses import BUILTIN_PREFIX, ResponsesError, load_rules

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

responses_app = typer.Typer(
    help="Show, replace or clear the response rules of a running server.",
    no_args_is_help=True,
)


def _print_rules(answer: dict[str, Any], url: str) -> None:
    rules = answer.get("rules", [])
    builtin = answer.get("builtin")
    described = ", ".join(str(rule.get("name", f"#{i}")) for i, rule in enumerate(rules, 1))
    out.print(
        f"{len(rules)} response rule(s) at {url} from {answer.get('origin')}"
        + (f": {described}" if described else "")
        + (f"; otherwise builtin:{builtin}" if builtin else "")
    )


def request_body(source: str) -> dict[str, Any]:
    """The JSON body for ``POST /admin/responses``: a built-in name or a file's rules.

    The file is checked here first, so a mistake is reported before anything is sent.
    """
    if source.startswith(BUILTIN_PREFIX):
        load_rules(source)
        return {"source": source}
    path = Path(source)
    load_rules(source)  # the same one-line errors as at start-up
    with path.open("rb") as handle:
        data: dict[str, Any] = tomllib.load(handle)
    return data


@responses_app.command("get")
def responses_get(url: Url = DEFAULT_URL, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Show the response rules in use."""
    answer = call_or_exit("GET", url, "/admin/responses", api_key)
    print_answer(answer, as_json, lambda: _print_rules(answer, url))


@responses_app.command("set")
def responses_set(
    source: Annotated[
        str,
        typer.Argument(
            metavar="FILE|builtin:tasks", help="A TOML file of [[rules]], or a built-in set."
        ),
    ],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Replace the response rules; every rule's request count starts again."""
    try:
        body = request_body(source)
    except ResponsesError as exc:
        _fail(CtlError(f"{source}: {exc}", 2))
    answer = call_or_exit("POST", url, "/admin/responses", api_key, body)
    print_answer(answer, as_json, lambda: _print_rules(answer, url))


@responses_app.command("clear")
def responses_clear(url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """Remove every rule: requests get the configured mode again."""
    _print_rules(call_or_exit("POST", url, "/admin/responses", api_key, {"rules": []}), url)
