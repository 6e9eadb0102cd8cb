"""Response rules: which requests get which chosen answer, checked before anything starts.

A rule set comes from a TOML file (``--responses rules.toml``), a ``[responses]`` table of
a profile, or names a built-in set (``builtin:tasks``)::

    [[rules]]
    name = "weather"
    regex = "weather in (\\w+)"
    tool_call = { name = "get_weather", arguments = { city = "{1}" } }

This module only parses and checks rules (a bad one is a single line naming the rule and
the key); :mod:`llmsim.answers` matches them against requests at run time.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmsim.settings.units import MAX_DURATION, format_duration, parse_duration

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

BUILTIN_PREFIX = "builtin:"
BUILTIN_SETS = ("tasks",)
ENDPOINTS = ("chat", "completions", "responses", "messages")
FINISH_REASONS = ("stop", "length", "tool_calls")
ACTIONS = ("text", "texts", "tool_call", "json", "error")
MATCHERS = ("model", "endpoint", "contains", "regex", "system", "tools", "nth", "every")
OVERRIDES = ("time_to_first_token", "inter_token_latency", "max_tokens", "finish_reason")
RULE_KEYS = ("name", *MATCHERS, *ACTIONS, *OVERRIDES)
TOP_KEYS = ("rules", "builtin")
CAPTURE = re.compile(r"\{(\d+)\}")
"""``{1}`` in an answer is the rule's first regex group; ``{0}`` the whole match."""

FinishReason = Literal["stop", "length", "tool_calls"]


class ResponsesError(ValueError):
    """A rule set could not be read or is invalid; the message is one line."""


@dataclass(frozen=True, slots=True)
class ErrorAction:
    status: int
    type: str
    message: str


@dataclass(frozen=True, slots=True)
class ToolCallAction:
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: every matcher given must hold; exactly one action decides the answer."""

    name: str
    models: tuple[str, ...] = ()
    endpoints: tuple[str, ...] = ()
    contains: str | None = None
    regex: re.Pattern[str] | None = None
    system: str | None = None
    tools: bool | None = None
    nth: int | None = None
    every: int | None = None
    text: str | None = None
    texts: tuple[str, ...] = ()
    tool_call: ToolCallAction | None = None
    json: Any = None
    error: ErrorAction | None = None
    time_to_first_token: float | None = None
    inter_token_latency: float | None = None
    max_tokens: int | None = None
    finish_reason: FinishReason | None = None
    source: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The rule as written, to show it back (``GET /admin/responses``)."""


@dataclass(frozen=True, slots=True)
class ResponseRules:
    """An ordered rule set and the built-in set that answers when no rule matches."""

    rules: tuple[Rule, ...] = ()
    builtin: str | None = None
    origin: str = "inline"

    def describe(self) -> dict[str, Any]:
        """The rule set as data, the way it was written."""
        described: dict[str, Any] = {"rules": [dict(rule.source) for rule in self.rules]}
        if self.builtin is not None:
            described["builtin"] = self.builtin
        return described


def load_rules(value: Any) -> ResponseRules:
    """Rules from ``builtin:NAME``, a TOML file path, parsed data or an existing set."""
    if isinstance(value, ResponseRules):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(BUILTIN_PREFIX):
            return ResponseRules(builtin=_builtin_name(text[len(BUILTIN_PREFIX) :]), origin=text)
        return parse_rules(_read_toml(Path(text)), origin=text)
    if isinstance(value, Mapping):
        return parse_rules(value)
    raise ResponsesError("expected a TOML file, builtin:tasks or a table of rules")


def _builtin_name(name: str) -> str:
    if name not in BUILTIN_SETS:
        raise ResponsesError(
            f"unknown built-in rule set {name!r}; choose from: "
            + ", ".join(BUILTIN_PREFIX + known for known in BUILTIN_SETS)
        )
    return name


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
    except FileNotFoundError:
        raise ResponsesError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise ResponsesError(f"{path} is a directory, not a TOML file") from None
    except OSError as exc:
        raise ResponsesError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ResponsesError(f"{path} is not valid TOML: {exc}") from None
    return data


def parse_rules(data: Mapping[str, Any], origin: str = "inline") -> ResponseRules:
    """Check a whole rule set; the first problem is raised as one line."""
    for key in data:
        if key not in TOP_KEYS:
            raise ResponsesError(f"unknown key {key!r}; expected: rules, builtin")
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise ResponsesError("'rules' must be a list of tables ([[rules]])")
    builtin = data.get("builtin")
    if builtin is not None:
        if not isinstance(builtin, str):
            raise ResponsesError("'builtin' must be a string such as \"tasks\"")
        builtin = _builtin_name(builtin.removeprefix(BUILTIN_PREFIX))
    rules = tuple(_parse_rule(raw, number) for number, raw in enumerate(raw_rules, start=1))
    return ResponseRules(rules, builtin, origin)


class _RuleReader:
    """Reads one rule's keys; every error names the rule and the key."""

    def __init__(self, raw: Mapping[str, Any], number: int) -> None:
        self.raw = raw
        name = raw.get("name")
        self.label = f"rule {name!r} (#{number})" if isinstance(name, str) else f"rule #{number}"

    def fail(self, key: str, reason: str) -> ResponsesError:
        return ResponsesError(f"{self.label}, key '{key}': {reason}")

    def string(self, key: str, allow_empty: bool = False) -> str | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or (not value and not allow_empty):
            raise self.fail(key, "expected a non-empty string")
        return value

    def strings(self, key: str, choices: tuple[str, ...] | None = None) -> tuple[str, ...]:
        value = self.raw.get(key)
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value
        if (
            not isinstance(items, list)
            or not items
            or not all(isinstance(item, str) and item for item in items)
        ):
            raise self.fail(key, "expected a string or a non-empty list of strings")
        if choices is not None:
            for item in items:
                if item not in choices:
                    raise self.fail(
                        key, f"unknown value {item!r}; expected one of: {', '.join(choices)}"
                    )
        return tuple(items)

    def count(self, key: str) -> int | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(key, "expected a whole number of at least 1")
        return value

    def duration(self, key: str) -> float | None:
        value = self.raw.get(key)
        if value is None:
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None
        if seconds > MAX_DURATION:
            raise self.fail(key, f"must be at most {format_duration(MAX_DURATION)}")
        return seconds


def _parse_rule(raw: Any, number: int) -> Rule:
    if not isinstance(raw, Mapping):
        raise ResponsesError(f"rule #{number}: expected a table ([[rules]])")
    reader = _RuleReader(raw, number)
    for key in raw:
        if key not in RULE_KEYS:
            raise reader.fail(key, "unknown key; expected one of: " + ", ".join(RULE_KEYS))
    actions = [key for key in ACTIONS if key in raw]
    if len(actions) != 1:
        found = ", ".join(actions) if actions else "none"
        raise reader.fail(
            actions[1] if len(actions) > 1 else "text",
            f"a rule needs exactly one of {', '.join(ACTIONS)} (found: {found})",
        )
    regex = _regex(reader)
    tools = raw.get("tools")
    if tools is not None and not isinstance(tools, bool):
        raise reader.fail("tools", "expected true or false")
    finish = raw.get("finish_reason")
    if finish is not None and finish not in FINISH_REASONS:
        raise reader.fail("finish_reason", f"expected one of: {', '.join(FINISH_REASONS)}")
    rule = Rule(
        name=reader.string("name") or f"#{number}",
        models=reader.strings("model"),
        endpoints=reader.strings("endpoint", ENDPOINTS),
        contains=reader.string("contains"),
        regex=regex,
        system=reader.string("system"),
        tools=tools,
        nth=reader.count("nth"),
        every=reader.count("every"),
        text=reader.string("text", allow_empty=True),
        texts=reader.strings("texts"),
        tool_call=_tool_call(reader),
        json=raw.get("json"),
        error=_error(reader),
        time_to_first_token=reader.duration("time_to_first_token"),
        inter_token_latency=reader.duration("inter_token_latency"),
        max_tokens=reader.count("max_tokens"),
        finish_reason=finish,
        source=dict(raw),
    )
    _check_combinations(reader, rule)
    return rule


def _regex(reader: _RuleReader) -> re.Pattern[str] | None:
    pattern = reader.string("regex")
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise reader.fail("regex", f"invalid regular expression: {exc}") from None


def _tool_call(reader: _RuleReader) -> ToolCallAction | None:
    value = reader.raw.get("tool_call")
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise reader.fail("tool_call", "expected a table { name = ..., arguments = { ... } }")
    for key in value:
        if key not in ("name", "arguments"):
            raise reader.fail(f"tool_call.{key}", "unknown key; expected name, arguments")
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise reader.fail("tool_call.name", "expected the name of a tool")
    arguments = value.get("arguments", {})
    if not isinstance(arguments, Mapping):
        raise reader.fail("tool_call.arguments", "expected a table of arguments")
    return ToolCallAction(name, dict(arguments))


def _error(reader: _RuleReader) -> ErrorAction | None:
    value = reader.raw.get("error")
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise reader.fail("error", "expected a table { status = ..., type = ..., message = ... }")
    for key in value:
        if key not in ("status", "type", "message"):
            raise reader.fail(f"error.{key}", "unknown key; expected status, type, message")
    status = value.get("status", 500)
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise reader.fail("error.status", "expected an HTTP error status from 400 to 599")
    error_type = value.get("type", _default_type(status))
    if not isinstance(error_type, str) or not error_type:
        raise reader.fail("error.type", "expected a vLLM error type such as BadRequestError")
    message = value.get("message", "Error injected by a response rule.")
    if not isinstance(message, str) or not message:
        raise reader.fail("error.message", "expected a non-empty string")
    return ErrorAction(status, error_type, message)


def _default_type(status: int) -> str:
    known = {401: "AuthenticationError", 403: "PermissionDeniedError", 404: "NotFoundError"}
    if status == 429:
        return "RateLimitError"
    return known.get(status, "InternalServerError" if status >= 500 else "BadRequestError")


def _check_combinations(reader: _RuleReader, rule: Rule) -> None:
    """Reject rules that could never answer as written."""
    if rule.nth is not None and rule.every is not None:
        raise reader.fail("every", "cannot be combined with 'nth'")
    if rule.error is not None:
        for key in OVERRIDES:
            if key in reader.raw:
                raise reader.fail(key, "an error answer has no tokens to time or cut")
    completions_only = rule.endpoints == ("completions",)
    if rule.tool_call is not None:
        if rule.tools is False:
            raise reader.fail("tool_call", "cannot call a tool when 'tools = false'")
        if completions_only:
            raise reader.fail("tool_call", "the completions endpoint has no tools")
    if completions_only and rule.system is not None:
        raise reader.fail("system", "the completions endpoint has no system prompt")
    if rule.finish_reason == "tool_calls" and rule.tool_call is None:
        raise reader.fail("finish_reason", "'tool_calls' needs a tool_call answer")
    groups = rule.regex.groups if rule.regex is not None else -1
    for key in ("text", "texts", "tool_call", "json"):
        highest = _highest_capture(reader.raw.get(key))
        if highest is not None and highest > groups:
            reason = (
                "uses a capture such as {1} but the rule has no 'regex'"
                if rule.regex is None
                else f"refers to capture {{{highest}}} but the regex has {groups} group(s)"
            )
            raise reader.fail(key, reason)


def _highest_capture(value: Any) -> int | None:
    """The largest ``{N}`` anywhere in a string, list or table; None when there is none."""
    if isinstance(value, str):
        numbers = [int(found) for found in CAPTURE.findall(value)]
        return max(numbers) if numbers else None
    children: list[Any] = []
    if isinstance(value, Mapping):
        children = list(value.values())
    elif isinstance(value, list):
        children = value
    found = [n for n in (_highest_capture(child) for child in children) if n is not None]
    return max(found) if found else None
