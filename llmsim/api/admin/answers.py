"""``/admin/responses``: show the response rules in use and replace them while running.

The body of ``POST`` is the rule set as JSON, the same shape as the TOML file
(``{"rules": [...], "builtin": "tasks"}``), or ``{"source": "builtin:tasks"}``;
``{"rules": []}`` clears it. A bad set is refused with 400 and the old one stays.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from llmsim.api.http.errors import APIError
from llmsim.api.http.jsonio import dumps
from llmsim.api.http.keys import RESPONDER
from llmsim.api.http.requests import read_json_object
from llmsim.settings.responses import (
    BUILTIN_PREFIX,
    ResponseRules,
    ResponsesError,
    load_rules,
    parse_rules,
)

logger = logging.getLogger("llmsim.admin")


def _body(request: web.Request) -> web.Response:
    rules = request.app[RESPONDER].rules
    body: dict[str, Any] = {"origin": rules.origin, **rules.describe()}
    return web.Response(body=dumps(body), content_type="application/json")


def _builtin(source: Any) -> ResponseRules:
    """Only built-in sets are named; a file's rules are sent as data (``llmsim ctl`` does)."""
    if not isinstance(source, str) or not source.startswith(BUILTIN_PREFIX):
        raise ResponsesError("'source' names a built-in set such as builtin:tasks")
    return load_rules(source)


async def get_responses(request: web.Request) -> web.Response:
    return _body(request)


async def set_responses(request: web.Request) -> web.Response:
    data = await read_json_object(request)
    try:
        if set(data) == {"source"}:
            rules = _builtin(data["source"])
        else:
            rules = parse_rules(data, origin="POST /admin/responses")
    except ResponsesError as exc:
        raise APIError(400, str(exc), "responses") from None
    request.app[RESPONDER].replace_rules(rules)
    logger.info("response rules replaced: %d rule(s) from %s", len(rules.rules), rules.origin)
    return _body(request)
