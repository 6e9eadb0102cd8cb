"""Matching response rules against requests: the first rule that matches decides.

Each rule counts the requests its other matchers accepted, so ``nth = 3`` answers only
the third such request and ``every = 2`` every second one. Counts start again when the
rule set is replaced (``POST /admin/responses``).

A rule's regex meets client text, so it runs on the linear-time matcher; only a regex it
cannot run (backreferences, lookarounds) keeps Python's backtracking :mod:`re`. The rules'
searches of one request share one step budget (``max_match_steps``): a text too long to
search within it matches no rule regex.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Mapping
from typing import Any

from llmsim.answers.choice import Choice, RuleError
from llmsim.answers.schema_check import schema_problem
from llmsim.answers.view import RequestView
from llmsim.engine import Answer, TimingOverride, ToolCall
from llmsim.engine.structured.linear import LinearMatch, LinearPattern, MatchMeter
from llmsim.engine.structured.regex import MatchBudgetError, UnsupportedRegexError
from llmsim.settings.responses import CAPTURE, ResponseRules, Rule

Found = LinearMatch | re.Match[str]
"""A rule regex's match: its groups fill the ``{N}`` captures."""
Searcher = LinearPattern | re.Pattern[str]
BACKTRACKING_COST = 1000
"""What one character is taken to cost a regex that keeps :mod:`re`: unknown, so high."""

logger = logging.getLogger("llmsim.answers")


class RuleMatcher:
    """One rule set in use, with its per-rule request counts."""

    def __init__(self, rules: ResponseRules, rng: random.Random) -> None:
        self.rules = rules
        self._counts = [0] * len(rules.rules)
        self._rng = rng
        self._searchers = [_searcher(rule.regex) for rule in rules.rules]
        self.search_cost = max(map(_cost, self._searchers), default=0)
        """The most steps one character of a request's text may cost the rule regexes."""
        self.calls_tools = any(rule.tool_call is not None for rule in rules.rules)
        """Whether a rule answers with a tool call, checked against the client's schema."""

    def choose(self, view: RequestView) -> Choice | None:
        """The answer of the first matching rule, or None when no rule matches."""
        meter = MatchMeter()
        for index, rule in enumerate(self.rules.rules):
            matched, found = _matches(rule, self._searchers[index], view, meter)
            if not matched:
                continue
            self._counts[index] += 1
            seen = self._counts[index]
            if rule.nth is not None and seen != rule.nth:
                continue
            if rule.every is not None and seen % rule.every:
                continue
            rng = random.Random(view.seed) if view.seed is not None else self._rng
            return decide(rule, found, view, rng)
        return None


def _searcher(regex: re.Pattern[str] | None) -> Searcher | None:
    """The linear-time form of a rule's regex, when it has one."""
    if regex is None:
        return None
    try:
        return LinearPattern(regex.pattern)
    except UnsupportedRegexError:
        return regex


def _cost(searcher: Searcher | None) -> int:
    if searcher is None:
        return 0
    return searcher.cost if isinstance(searcher, LinearPattern) else BACKTRACKING_COST


def _search(searcher: Searcher, text: str, meter: MatchMeter) -> Found | None:
    """``searcher`` in ``text``; None also when the text is too long to search in budget."""
    if not isinstance(searcher, LinearPattern):
        return searcher.search(text)
    try:
        return searcher.search(text, meter)
    except MatchBudgetError as exc:
        logger.warning(
            "A request's text of %d characters matches no rule regex: %s", len(text), exc
        )
        return None


def _matches(
    rule: Rule, searcher: Searcher | None, view: RequestView, meter: MatchMeter
) -> tuple[bool, Found | None]:
    """Whether every matcher of ``rule`` holds, and the regex match for captures."""
    if rule.models and view.model not in rule.models and view.adapter not in rule.models:
        return False, None
    if rule.endpoints and (view.api or view.endpoint) not in rule.endpoints:
        return False, None
    if rule.contains is not None and rule.contains.casefold() not in view.text.casefold():
        return False, None
    if rule.system is not None and rule.system.casefold() not in view.system.casefold():
        return False, None
    if rule.tools is not None and bool(view.tools) != rule.tools:
        return False, None
    if rule.tool_call is not None and (view.tools is None or rule.tool_call.name not in view.tools):
        return False, None  # a tool call needs that tool on offer
    found = None
    if searcher is not None:
        found = _search(searcher, view.text, meter)
        if found is None:
            return False, None
    return True, found


def decide(rule: Rule, found: Found | None, view: RequestView, rng: random.Random) -> Choice:
    """The answer ``rule`` gives to ``view`` (its regex ``found`` fills the captures)."""
    source = f"rule {rule.name!r}"
    if rule.error is not None:
        error = rule.error
        return Choice(source, error=RuleError(error.status, error.type, error.message))
    timing = None
    if rule.time_to_first_token is not None or rule.inter_token_latency is not None:
        timing = TimingOverride(rule.time_to_first_token, rule.inter_token_latency)
    if rule.tool_call is not None:
        arguments = fill(rule.tool_call.arguments, found)
        schema = (view.tools or {}).get(rule.tool_call.name, {})
        problem = schema_problem(arguments, schema)
        if problem is not None:
            message = (
                f"Response {source}: the arguments of tool {rule.tool_call.name!r} do not "
                f"match its schema ({problem})."
            )
            return Choice(source, error=RuleError(500, "InternalServerError", message))
        call = ToolCall(rule.tool_call.name, json.dumps(arguments, ensure_ascii=False))
        answer = Answer("", (call,), rule.finish_reason)
    else:
        answer = Answer(_text(rule, found, rng), (), rule.finish_reason)
    return Choice(source, answer=answer, max_tokens=rule.max_tokens, timing=timing)


def _text(rule: Rule, found: Found | None, rng: random.Random) -> str:
    if rule.text is not None:
        return str(fill(rule.text, found))
    if rule.texts:
        return str(fill(rng.choice(rule.texts), found))
    return json.dumps(fill(rule.json, found), ensure_ascii=False)


def fill(value: Any, found: Found | None) -> Any:
    """``value`` with each ``{N}`` in its strings replaced by regex group N."""
    if isinstance(value, str):
        if found is None:
            return value
        return CAPTURE.sub(lambda ref: found.group(int(ref.group(1))) or "", value)
    if isinstance(value, Mapping):
        return {key: fill(item, found) for key, item in value.items()}
    if isinstance(value, list):
        return [fill(item, found) for item in value]
    return value
