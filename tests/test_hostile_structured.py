"""Hostile structured-output input: every schema, regex and pattern is bounded work.

Each attack either gets a value (that validates) or is refused with a named limit, well
within a second; the property-based part throws random nested schemas (``$ref`` cycles
included) and random regexes at the generators, and checks the linear-time matcher
against :mod:`re`. The black-box tests for the HTTP APIs live in
``test_hostile_structured_api.py``.
"""

from __future__ import annotations

import json
import random
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import validators

from llmsim.answers.rules import RuleMatcher
from llmsim.answers.schema_check import schema_problem
from llmsim.answers.view import RequestView
from llmsim.engine.structured import (
    LIMITS,
    FunctionSpec,
    LinearPattern,
    MatchBudgetError,
    OutputConstraint,
    ToolChoice,
    UnsupportedRegexError,
    UnsupportedSchemaError,
    check_tools,
    constrained_text,
    regex_instance,
    schema_instance,
    tool_answer,
)
from llmsim.settings.responses import parse_rules

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

WITHIN = 1.0
"""Seconds any single attack may take to be generated or refused (generous: loaded CI)."""
BUDGETED = 5.0
"""Seconds a search may take to spend ``max_match_steps`` (about one; generous: loaded CI)."""


def _timed(action: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """Run ``action``; its result or the error it raised, asserting it ended in time."""
    start = time.perf_counter()
    try:
        result, error = action(), None
    except (UnsupportedSchemaError, UnsupportedRegexError) as exc:
        result, error = None, exc
    elapsed = time.perf_counter() - start
    assert elapsed < WITHIN, f"took {elapsed:.2f}s"
    return result, error


def _refused(schema: Any) -> UnsupportedSchemaError:
    _, error = _timed(lambda: schema_instance(schema, random.Random(0)))
    assert isinstance(error, UnsupportedSchemaError), "expected a refusal"
    return error


def _valid(schema: Any, instance: Any) -> bool:
    """``jsonschema``'s verdict; it recurses a dozen frames per level of a deep value."""
    cls = validators.validator_for(schema)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 5_000))
    try:
        return bool(cls(schema).is_valid(instance))
    except RecursionError:
        # A left-recursive schema (anyOf: [{"$ref": "#"}, ...]) sends the validator round
        # in circles without reading the value: it cannot judge, so neither can the test.
        assume(False)
        raise
    finally:
        sys.setrecursionlimit(limit)


def _doubling_defs(levels: int, shape: Callable[[str], Any]) -> dict[str, Any]:
    """``levels`` definitions, each using the previous one twice: 2**levels once expanded."""
    defs: dict[str, Any] = {"d0": {"type": "string"}}
    for level in range(1, levels + 1):
        defs[f"d{level}"] = shape(f"#/$defs/d{level - 1}")
    return {"$defs": defs, "$ref": f"#/$defs/d{levels}"}


# -- schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#"},
        {"allOf": [{"$ref": "#"}]},
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
        {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"},
    ],
)
def test_ref_cycles_without_a_value_in_between_are_refused(schema: Any) -> None:
    error = _refused(schema)
    assert error.keyword == "$ref"
    assert "refers to itself" in str(error)


def test_a_cycle_is_refused_up_front_even_if_generation_would_not_reach_it() -> None:
    tools = [FunctionSpec("f", {"$defs": {"loop": {"$ref": "#/$defs/loop"}}, "type": "object"})]
    with pytest.raises(UnsupportedSchemaError, match="refers to itself"):
        check_tools(tools, ToolChoice("auto"))


def test_allof_doubling_is_resolved_once_per_definition() -> None:
    schema = _doubling_defs(30, lambda ref: {"allOf": [{"$ref": ref}, {"$ref": ref}]})
    value, error = _timed(lambda: schema_instance(schema, random.Random(0)))
    assert error is None
    assert isinstance(value, str)  # every definition is the string of d0 (a validator would
    # itself take 2**30 steps to confirm it)


def test_a_value_doubling_at_each_level_is_refused_by_the_value_limit() -> None:
    schema = _doubling_defs(
        30,
        lambda ref: {
            "type": "object",
            "properties": {"x": {"$ref": ref}, "y": {"$ref": ref}},
            "required": ["x", "y"],
        },
    )
    message = str(_refused(schema))  # whichever comes first: the values or their text
    assert f"max_values={LIMITS.max_values}" in message or "max_chars=" in message


def test_required_recursion_without_a_base_case_is_refused_by_depth() -> None:
    schema = {"type": "object", "properties": {"next": {"$ref": "#"}}, "required": ["next"]}
    error = _refused(schema)
    assert f"max_depth={LIMITS.max_depth}" in str(error)


@pytest.mark.parametrize(
    "schema",
    [
        {  # recursion through an anyOf whose other branch is null
            "$defs": {
                "node": {
                    "anyOf": [
                        {"type": "object", "properties": {"v": {"$ref": "#/$defs/node"}}},
                        {"type": "null"},
                    ]
                }
            },
            "$ref": "#/$defs/node",
        },
        {  # children in an array that may be empty
            "type": "object",
            "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}},
            "required": ["kids"],
        },
        {  # a nullable type list
            "type": ["object", "null"],
            "properties": {"next": {"$ref": "#"}},
            "required": ["next"],
        },
    ],
)
def test_recursive_schemas_with_a_way_out_generate_finite_values(schema: Any) -> None:
    for seed in range(10):
        value, error = _timed(lambda seed=seed: schema_instance(schema, random.Random(seed)))
        assert error is None
        assert _valid(schema, value)


def test_openapi_nullable_ends_recursion_with_null() -> None:
    schema = {"type": "object", "nullable": True, "properties": {"c": {"$ref": "#"}}}
    schema["required"] = ["c"]
    value, error = _timed(lambda: schema_instance(schema, random.Random(0)))
    assert error is None
    depth = 0
    while value is not None:
        depth, value = depth + 1, value["c"]
    assert depth == LIMITS.optional_depth


@pytest.mark.parametrize(
    ("schema", "limit"),
    [
        ({"type": "string", "minLength": 999_999}, "max_chars"),
        (
            {"type": "array", "minItems": 1000, "items": {"type": "string", "minLength": 999}},
            "max_chars",
        ),
        ({"type": "array", "minItems": 1001}, "max_items"),
        ({"type": "object", "minProperties": 5000}, "max_items"),
        (
            {"type": "array", "minItems": 1000, "items": {"type": "string", "pattern": "x{99}"}},
            "max_regex_steps",
        ),
    ],
)
def test_schemas_asking_for_too_much_are_refused_naming_the_limit(schema: Any, limit: str) -> None:
    assert f"(limit {limit}=" in str(_refused(schema))


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [
        ({"type": "integer", "minimum": -float("inf"), "maximum": float("inf")}, "minimum"),
        ({"type": "integer", "minimum": 10**400}, "minimum"),
        ({"type": "number", "minimum": float("inf")}, "minimum"),
        ({"type": "number", "maximum": -(10**400)}, "maximum"),
        ({"type": "number", "multipleOf": float("nan")}, "multipleOf"),
        ({"type": "number", "multipleOf": 0}, "multipleOf"),
        ({"const": float("nan")}, "const"),
        ({"enum": [float("inf"), 1]}, "enum"),
        ({"const": {"a": [float("-inf")]}}, "const"),
    ],
)
def test_numbers_without_a_json_form_are_refused(schema: Any, keyword: str) -> None:
    assert _refused(schema).keyword == keyword


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "number", "multipleOf": 1e-300},
        {"type": "number", "multipleOf": 1e-300, "minimum": 1e10, "maximum": 1e12},
        {"type": "number", "multipleOf": 1e300},
        {"type": "integer", "multipleOf": 1e300, "minimum": 1},
        {"type": "integer", "multipleOf": 1e-300, "minimum": 0},  # k * step is rarely whole
        {"type": "number", "minimum": -1.7e308, "maximum": 1.7e308},
        {"type": "number", "minimum": 1e300},
        {"type": "integer", "minimum": 10**300, "maximum": 10**300 + 5},
    ],
)
def test_extreme_but_finite_numbers_give_json_or_a_refusal(schema: Any) -> None:
    value, error = _timed(lambda: schema_instance(schema, random.Random(0)))
    if error is None:
        assert _valid(schema, value)
        json.dumps(value, allow_nan=False)
    else:
        assert error.keyword == "multipleOf"  # type: ignore[attr-defined]


def _nested_arrays(depth: int, inner: dict[str, Any]) -> dict[str, Any]:
    for _ in range(depth):
        inner = {"type": "array", "items": inner, "minItems": 1}
    return inner


@pytest.mark.parametrize(
    ("schema", "refused"),
    [
        ({"type": "object", "minProperties": 10, "properties": {"a": {}}}, None),
        (_nested_arrays(6, {"type": "array", "prefixItems": [{}, {}], "items": False}), None),
        ({"type": "object", "minProperties": 3, "maxProperties": 2}, "minProperties"),
        ({"type": "array", "minItems": 2, "maxItems": 1}, "minItems"),
        ({"type": "string", "minLength": 9, "maxLength": 3}, "minLength"),
        (
            {"type": "array", "items": {"enum": [1, 2]}, "uniqueItems": True, "minItems": 3},
            "uniqueItems",
        ),
        (
            {"type": "array", "items": {"const": 1}, "uniqueItems": True, "minItems": 2},
            "uniqueItems",
        ),
        ({"type": "array", "items": {"type": "boolean"}, "uniqueItems": True, "minItems": 2}, None),
        (
            {"type": "array", "items": {"type": "integer"}, "uniqueItems": True, "minItems": 50},
            None,
        ),
    ],
)
def test_sizes_are_honoured_or_refused_when_unsatisfiable(schema: Any, refused: str) -> None:
    value, error = _timed(lambda: schema_instance(schema, random.Random(0)))
    assert getattr(error, "keyword", None) == refused
    assert error is not None or _valid(schema, value)


# -- regexes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("(?:){4294967294}", "max_repeat"),
        ("x{4294967295}", "invalid regex"),
        (r"[\x00-\xff]{99999}", "max_repeat"),
        ("(?:(?:(?:)?){9999}){9999}", "max_regex_steps"),
        ("(?:x{9000}){20}", "max_chars"),
        ("(" * 5000 + ")" * 5000, "invalid regex"),
    ],
)
def test_regexes_over_a_limit_are_refused_at_once(pattern: str, fragment: str) -> None:
    _, error = _timed(lambda: regex_instance(pattern, random.Random(0)))
    assert isinstance(error, UnsupportedRegexError)
    assert fragment in str(error)
    assert len(str(error)) < 300  # a long pattern is not echoed whole


def test_a_long_but_allowed_regex_is_generated_in_time() -> None:
    text, error = _timed(lambda: regex_instance(r"[\x00-\xff]{9999}", random.Random(0)))
    assert error is None
    assert re.fullmatch(r"[\x00-\xff]{9999}", text)


# -- patterns on client and rule data ---------------------------------------------------------


def test_a_catastrophic_tool_pattern_is_checked_in_linear_time() -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^(a+)+b$"}}}
    problem, _ = _timed(lambda: schema_problem({"code": "a" * 5000 + "!"}, schema))
    assert problem is not None
    assert "does not match" in problem
    assert schema_problem({"code": "aaab"}, schema) is None


def test_a_rule_answering_a_tool_with_a_hostile_pattern_is_refused_quickly() -> None:
    rules = parse_rules(
        {"rules": [{"tool_call": {"name": "run", "arguments": {"code": "a" * 3000 + "c"}}}]}
    )
    tools = {"run": {"type": "object", "properties": {"code": {"pattern": "^(a+)+b$"}}}}
    view = RequestView("chat", "m", None, "hi", tools=tools)
    choice, _ = _timed(lambda: RuleMatcher(rules, random.Random(0)).choose(view))
    assert choice is not None
    assert choice.error is not None
    assert "does not match" in choice.error.message


def test_rule_regexes_meet_client_text_in_linear_time() -> None:
    rules = parse_rules({"rules": [{"regex": r"^(\w+\s?)*$", "text": "matched"}]})
    view = RequestView("chat", "m", None, "word " * 2000 + "!")
    choice, _ = _timed(lambda: RuleMatcher(rules, random.Random(0)).choose(view))
    assert choice is None


def test_rule_captures_come_from_the_linear_matcher() -> None:
    rules = parse_rules({"rules": [{"regex": r"(?i)weather in (\w+)", "text": "Sun in {1}."}]})
    view = RequestView("chat", "m", None, "What's the WEATHER in Oslo?")
    choice = RuleMatcher(rules, random.Random(0)).choose(view)
    assert choice is not None
    assert choice.answer is not None
    assert choice.answer.text == "Sun in Oslo."


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        ("^(a+)+b$", "a" * 3_000_000),
        ("(?:a|aa)" * 4000 + "b", "a" * 50_000),
        ("[ab]" * 900 + "c", "ab" * 1000),
    ],
)
def test_a_search_stops_at_its_step_budget(pattern: str, text: str) -> None:
    linear, start = LinearPattern(pattern), time.perf_counter()
    with pytest.raises(MatchBudgetError, match="max_match_steps"):
        linear.search(text)
    assert time.perf_counter() - start < BUDGETED  # about a second of CPU at most


def test_a_pattern_whose_states_each_copy_many_slots_is_not_checked() -> None:
    with pytest.raises(UnsupportedRegexError, match="max_pattern_program"):
        LinearPattern("(a*)" * 3000 + "b")


def test_one_check_shares_one_budget_over_all_its_patterns() -> None:
    branches = [{"pattern": "(?:a|aa)" * (2000 + i) + "b"} for i in range(300)]
    schema = {"type": "object", "properties": {"code": {"anyOf": branches}}}
    start = time.perf_counter()
    assert schema_problem({"code": "a" * 20_000}, schema) is None  # unknown: no false alarm
    assert time.perf_counter() - start < BUDGETED


def test_patterns_the_linear_matcher_cannot_run_are_not_checked() -> None:
    schema = {"type": "string", "pattern": r"(a)\1"}
    assert schema_problem("xy", schema) is None  # unknown: never a false alarm
    with pytest.raises(UnsupportedRegexError):
        LinearPattern(r"(?=a)a")


# -- property-based: random schemas --------------------------------------------------------------

_REFS = st.sampled_from(["#/$defs/a", "#/$defs/b", "#", "#/$defs/missing"]).map(
    lambda ref: {"$ref": ref}
)
_BOUND = st.one_of(
    st.integers(-(10**6), 10**6),
    st.sampled_from([1e300, -1e300, 1.7e308, float("inf"), 10**400, 0.5]),
)
_NUMBERS = st.fixed_dictionaries(
    {"type": st.sampled_from(["integer", "number"])},
    optional={
        "minimum": _BOUND,
        "maximum": _BOUND,
        "multipleOf": st.sampled_from([1, 3, 0.5, 1e-300, 1e300]),
    },
)
_STRINGS = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("string")},
        optional={"minLength": st.integers(0, 200_000), "maxLength": st.integers(0, 50)},
    ),
    st.fixed_dictionaries(
        {"type": st.just("string"), "pattern": st.sampled_from([r"^\d{3}$", "[a-c]{2,4}", "x*"])}
    ),
)
_LEAVES = st.one_of(
    _NUMBERS,
    _STRINGS,
    st.sampled_from([{"type": "boolean"}, {"type": "null"}, True, {"const": 3}, {"enum": [1]}]),
    _REFS,
)


def _composites(children: Any) -> Any:
    names = st.sampled_from(["p", "q", "r"])
    objects = st.fixed_dictionaries(
        {
            "type": st.just("object"),
            "properties": st.dictionaries(names, children, max_size=3),
            "required": st.lists(names, max_size=3, unique=True),
        }
    )
    arrays = st.fixed_dictionaries(
        {"type": st.just("array"), "items": children},
        optional={"minItems": st.integers(0, 1500), "maxItems": st.integers(0, 5)},
    )
    # Disjoint branches keep oneOf exact; allOf parts are objects with their own property.
    typed = st.sampled_from([{"type": "boolean"}, {"type": "null"}, {"type": "string"}])
    one_of = st.lists(typed, min_size=1, max_size=3, unique_by=lambda s: s["type"])
    all_of = st.lists(
        st.builds(
            lambda name, child: {"type": "object", "properties": {name: child}},
            st.sampled_from(["s", "t", "u"]),
            children,
        ),
        min_size=1,
        max_size=3,
        unique_by=lambda part: next(iter(part["properties"])),
    )
    return st.one_of(
        objects,
        arrays,
        st.lists(children, min_size=1, max_size=3).map(lambda xs: {"anyOf": xs}),
        one_of.map(lambda xs: {"oneOf": xs}),
        all_of.map(lambda xs: {"allOf": xs}),
        _REFS.map(lambda ref: {"allOf": [ref]}),  # an indirection: cycles without a value
    )


_SCHEMAS = st.recursive(_LEAVES, _composites, max_leaves=12)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(root=_SCHEMAS, a=_SCHEMAS, b=_SCHEMAS, seed=st.integers(0, 2**16))
def test_random_schemas_give_valid_values_or_a_refusal_in_time(
    root: Any, a: Any, b: Any, seed: int
) -> None:
    schema = {"$defs": {"a": a, "b": b}, **root} if isinstance(root, dict) else root
    value, error = _timed(lambda: schema_instance(schema, random.Random(seed)))
    if error is None:
        assert _valid(schema, value), (json.dumps(schema), json.dumps(value)[:300])
        json.dumps(value, allow_nan=False)


# -- property-based: random regexes ----------------------------------------------------------------

_ATOMS = st.sampled_from(["a", "b", "[ab]", "[^a]", ".", r"\d", r"\w", r"\s", "(?:)", "x"])
_QUANTIFIERS = st.sampled_from(
    ["", "", "*", "+", "?", "*?", "+?", "??", "{2}", "{1,3}", "{0,2}?", "{20000}", "{9999}"]
)


def _regexes(anchors: bool) -> Any:
    def combine(children: Any) -> Any:
        groups = st.tuples(st.sampled_from(["(", "(?:"]), children, _QUANTIFIERS).map(
            lambda parts: f"{parts[0]}{parts[1]}){parts[2]}"
        )
        alternation = st.tuples(children, children).map("|".join)
        sequence = st.tuples(children, children).map("".join)
        return st.one_of(groups, alternation, sequence)

    atoms = st.tuples(_ATOMS, _QUANTIFIERS).map("".join)
    if anchors:
        atoms = st.one_of(atoms, st.sampled_from(["^", "$", r"\b", r"\B"]))
    return st.recursive(atoms, combine, max_leaves=8)


def _small(pattern: str) -> bool:
    """Without the huge repeat counts, which only the limits tests need."""
    return not re.search(r"\{\d{4,}\}", pattern)


@settings(max_examples=150, deadline=None)
@given(pattern=_regexes(anchors=False), seed=st.integers(0, 2**16))
def test_random_regexes_give_a_full_match_or_a_refusal_in_time(pattern: str, seed: int) -> None:
    text, error = _timed(lambda: regex_instance(pattern, random.Random(seed)))
    # ``re`` itself may backtrack for ages on these: the linear matcher checks the small ones
    if error is None and _small(pattern):
        assert LinearPattern(rf"\A(?:{pattern})\Z").search(text), (pattern, text[:100])


@settings(max_examples=250, deadline=None)
@given(
    pattern=_regexes(anchors=True).filter(_small),
    text=st.text(alphabet="ab x1\n_", max_size=12),
)
def test_the_linear_matcher_agrees_with_re(pattern: str, text: str) -> None:
    expected = re.search(pattern, text)
    found = LinearPattern(pattern).search(text)
    assert (found is None) == (expected is None), (pattern, text)
    if found is not None and expected is not None:
        assert found.span() == expected.span(), (pattern, text)


def test_the_linear_matcher_agrees_on_groups_of_typical_patterns() -> None:
    cases = [
        (r"weather in (\w+)(?: on (\w+))?", "the weather in Paris on Monday"),
        (r"(a|ab)(c|bcd)(d*)", "abcd"),
        (r"(\d{2,4})-(\d+)?", "tel 12345-"),
        (r"(?m)^(\w+):\s*(.*)$", "x\nname: value\n"),
        (r"(?i)(HELLO)\s+(w)orld", "oh hello World"),
    ]
    for pattern, text in cases:
        expected = re.search(pattern, text)
        found = LinearPattern(pattern).search(text)
        assert expected is not None
        assert found is not None
        groups = range(expected.re.groups + 1)
        assert [found.group(i) for i in groups] == [expected.group(i) for i in groups]


# -- tools ----------------------------------------------------------------------------------------


def test_a_hostile_tool_schema_is_refused_naming_the_tool() -> None:
    tools = [FunctionSpec("ok", {"type": "object"}), FunctionSpec("bad", {"$ref": "#"})]
    with pytest.raises(UnsupportedSchemaError) as caught:
        check_tools(tools, ToolChoice("required"))
    assert getattr(caught.value, "index", None) == 1


def test_a_tool_that_recurses_forever_is_refused_when_called() -> None:
    schema = {"type": "object", "properties": {"n": {"$ref": "#"}}, "required": ["n"]}
    tools = [FunctionSpec("deep", schema)]
    _, error = _timed(
        lambda: tool_answer(
            tools,
            ToolChoice("required"),
            parallel=False,
            last_role="user",
            probability=1.0,
            rng=random.Random(0),
        )
    )
    assert isinstance(error, UnsupportedSchemaError)
    assert getattr(error, "index", None) == 0


def test_nan_in_a_constraint_never_reaches_the_answer() -> None:
    with pytest.raises(UnsupportedSchemaError):
        constrained_text(OutputConstraint("json", schema={"const": float("nan")}), random.Random(0))
