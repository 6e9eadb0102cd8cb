"""The structured-output generators: JSON Schema instances, regex matches, tool decisions.

Every generated value is checked with ``jsonschema`` (formats included) against a corpus
of real-world schema shapes vendored in ``tests/data/json_schemas.json``.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import validators

from llmsim.engine import Answer, ToolCall
from llmsim.engine.generation import generate
from llmsim.engine.structured import (
    FunctionSpec,
    OutputConstraint,
    ToolChoice,
    ToolChoiceError,
    UnsupportedRegexError,
    UnsupportedSchemaError,
    check_tools,
    constrained_text,
    regex_instance,
    schema_instance,
    tool_answer,
)
from llmsim.engine.structured.schema import UNSUPPORTED_KEYWORDS

CORPUS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "json_schemas.json").read_text()
)
SEEDS = range(25)


def _validator(schema: Any) -> Any:
    cls = validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _assert_valid(schema: Any, instance: Any) -> None:
    errors = [error.message for error in _validator(schema).iter_errors(instance)]
    assert not errors, (json.dumps(instance), errors)


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 50


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_every_corpus_schema_gets_valid_instances(name: str) -> None:
    schema = CORPUS[name]
    for seed in SEEDS:
        instance = schema_instance(schema, random.Random(seed))
        _assert_valid(schema, instance)
        # What a client receives is the JSON text: it must round-trip.
        assert json.loads(json.dumps(instance)) == instance


def test_seeded_generation_is_reproducible() -> None:
    schema = CORPUS["invoice_extraction"]
    first = schema_instance(schema, random.Random(5))
    assert schema_instance(schema, random.Random(5)) == first


def test_optional_parts_vary_between_seeds() -> None:
    schema = CORPUS["calendar_event"]
    keys = {frozenset(schema_instance(schema, random.Random(seed))) for seed in SEEDS}
    assert len(keys) > 1


def test_recursive_schemas_end() -> None:
    schema = CORPUS["linked_list_recursive"]
    for seed in SEEDS:
        depth, node = 0, schema_instance(schema, random.Random(seed))["head"]
        while node is not None:
            depth, node = depth + 1, node["next"]
        assert depth < 40


@pytest.mark.parametrize("keyword", UNSUPPORTED_KEYWORDS)
def test_keywords_that_cannot_be_honoured_are_refused_by_name(keyword: str) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", keyword: {}}}}
    with pytest.raises(UnsupportedSchemaError) as caught:
        schema_instance(schema, random.Random(0))
    assert caught.value.keyword == keyword
    assert f"'{keyword}'" in str(caught.value)


def test_remote_refs_are_refused() -> None:
    with pytest.raises(UnsupportedSchemaError, match=r"\$ref"):
        schema_instance({"$ref": "https://example.com/schema.json"}, random.Random(0))


def test_impossible_bounds_are_refused() -> None:
    with pytest.raises(UnsupportedSchemaError, match="minimum"):
        schema_instance({"type": "integer", "minimum": 5, "maximum": 4}, random.Random(0))


def test_unknown_keywords_and_annotations_are_ignored() -> None:
    schema = {"type": "string", "x-internal": True, "examples": ["a"], "title": "T"}
    assert isinstance(schema_instance(schema, random.Random(0)), str)


# -- property-based: numeric and string bounds -------------------------------------------

bound = st.one_of(st.none(), st.integers(-1000, 1000))


@settings(max_examples=150, deadline=None)
@given(
    low=bound,
    span=st.integers(12, 500),
    exclusive_low=st.booleans(),
    exclusive_high=st.booleans(),
    integer=st.booleans(),
    step=st.sampled_from([None, 1, 2, 5, 0.5, 0.25, 0.1]),
    seed=st.integers(0, 2**32),
)
def test_numbers_respect_every_bound(
    low: int | None,
    span: int,
    exclusive_low: bool,
    exclusive_high: bool,
    integer: bool,
    step: float | None,
    seed: int,
) -> None:
    schema: dict[str, Any] = {"type": "integer" if integer else "number"}
    high = None if low is None else low + span
    if low is not None:
        schema["exclusiveMinimum" if exclusive_low else "minimum"] = low
    if high is not None:
        schema["exclusiveMaximum" if exclusive_high else "maximum"] = high
    if step is not None and (not integer or float(step).is_integer()):
        schema["multipleOf"] = step
    _assert_valid(schema, schema_instance(schema, random.Random(seed)))


@settings(max_examples=150, deadline=None)
@given(low=st.integers(0, 60), extra=st.integers(0, 60), seed=st.integers(0, 2**32))
def test_strings_respect_length_bounds(low: int, extra: int, seed: int) -> None:
    schema = {"type": "string", "minLength": low, "maxLength": low + extra}
    _assert_valid(schema, schema_instance(schema, random.Random(seed)))


@settings(max_examples=100, deadline=None)
@given(
    low=st.integers(0, 4), extra=st.integers(0, 4), unique=st.booleans(), seed=st.integers(0, 999)
)
def test_arrays_respect_item_bounds(low: int, extra: int, unique: bool, seed: int) -> None:
    schema = {
        "type": "array",
        "items": {"type": "integer", "minimum": 0, "maximum": 1000},
        "minItems": low,
        "maxItems": low + extra,
        "uniqueItems": unique,
    }
    _assert_valid(schema, schema_instance(schema, random.Random(seed)))


# -- regex -----------------------------------------------------------------------------

PATTERNS = [
    r"\d{3}-\d{4}",
    r"[A-Z][a-z]{2,8} (Smith|Jones|Lee)",
    r"^[\w.]+@[a-z]+\.(com|org)$",
    r"(ab)+\1",
    r"[^a-z\s]{2,5}",
    r"\s\S.*?x",
    r"(?:yes|no|maybe)!?",
    r"#[0-9a-fA-F]{6}",
    r"v\d+\.\d+\.\d+(-rc\.\d)?",
    r"(?P<year>19|20)\d\d-(0[1-9]|1[0-2])",
    r"\W\w*\D",
    r"a{0}b{1,}c*",
]


@settings(max_examples=200, deadline=None)
@given(pattern=st.sampled_from(PATTERNS), seed=st.integers(0, 2**32))
def test_regex_outputs_match(pattern: str, seed: int) -> None:
    assert re.fullmatch(pattern, regex_instance(pattern, random.Random(seed)))


@pytest.mark.parametrize("pattern", [r"(?=a)a", r"a(?!b)", r"(", r"(?<=x)y"])
def test_regex_constructs_without_a_generator_are_refused(pattern: str) -> None:
    with pytest.raises(UnsupportedRegexError):
        regex_instance(pattern, random.Random(0))


def test_choices_and_json_objects() -> None:
    rng = random.Random(3)
    choices = ("red", "green", "blue")
    picked = {constrained_text(OutputConstraint("choice", choices=choices), rng) for _ in SEEDS}
    assert picked <= set(choices)
    assert len(picked) > 1
    assert isinstance(json.loads(constrained_text(OutputConstraint("json_object"), rng)), dict)


# -- tool decisions ----------------------------------------------------------------------

WEATHER = FunctionSpec("get_weather", CORPUS["weather_tool"])
TIME = FunctionSpec("get_time", None)
TOOLS = [WEATHER, TIME]


def _decide(choice: ToolChoice, *, seed: int = 0, **kwargs: Any) -> Answer | None:
    options: dict[str, Any] = {"parallel": True, "last_role": "user", "probability": 0.5}
    options.update(kwargs)
    return tool_answer(TOOLS, choice, rng=random.Random(seed), **options)


def test_required_always_calls_with_valid_arguments() -> None:
    for seed in SEEDS:
        answer = _decide(ToolChoice("required"), seed=seed)
        assert answer is not None
        assert answer.tool_calls
        assert answer.finish_reason is None  # reported as tool_calls
        for call in answer.tool_calls:
            if call.name == "get_weather":
                _assert_valid(WEATHER.parameters, json.loads(call.arguments))
            else:
                assert call.arguments == "{}"


def test_named_choice_calls_that_function_and_finishes_with_stop() -> None:
    answer = _decide(ToolChoice("named", "get_weather"))
    assert answer is not None
    assert [call.name for call in answer.tool_calls] == ["get_weather"]
    assert answer.finish_reason == "stop"


def test_without_parallel_calls_there_is_one_call() -> None:
    counts = {
        len(answer.tool_calls)
        for seed in range(60)
        if (answer := _decide(ToolChoice("required"), seed=seed, parallel=False))
    }
    assert counts == {1}
    parallel = {
        len(answer.tool_calls)
        for seed in range(60)
        if (answer := _decide(ToolChoice("required"), seed=seed))
    }
    assert max(parallel) > 1


def test_auto_follows_the_probability_reproducibly() -> None:
    calls = [_decide(ToolChoice("auto"), seed=seed) is not None for seed in range(400)]
    assert 0.4 < sum(calls) / len(calls) < 0.6
    assert calls == [_decide(ToolChoice("auto"), seed=seed) is not None for seed in range(400)]
    assert all(_decide(ToolChoice("auto"), seed=s, probability=1.0) for s in SEEDS)
    assert not any(_decide(ToolChoice("auto"), seed=s, probability=0.0) for s in SEEDS)


def test_auto_answers_in_text_after_a_tool_result() -> None:
    for seed in SEEDS:
        assert _decide(ToolChoice("auto"), seed=seed, last_role="tool", probability=1.0) is None


def test_none_never_calls() -> None:
    assert _decide(ToolChoice("none"), probability=1.0) is None


def test_unknown_named_tool_and_bad_schemas_are_refused() -> None:
    with pytest.raises(ToolChoiceError, match="'nope' has not been passed in `tools`"):
        check_tools(TOOLS, ToolChoice("named", "nope"))
    with pytest.raises(UnsupportedSchemaError, match="'if'"):
        check_tools([FunctionSpec("f", {"if": {}})], ToolChoice("auto"))


# -- tool calls as tokens ----------------------------------------------------------------


def _generate(answer: Answer, max_tokens: int | None) -> Any:
    return generate(
        answer=answer,
        mode="random",
        echo_text="",
        max_tokens=max_tokens,
        budget=4096,
        ignore_eos=False,
        stop=(),
        rng=random.Random(0),
    )


CALLS = Answer(
    tool_calls=(ToolCall("a", '{"city": "Paris"}'), ToolCall("b", '{"x": 1, "y": [2, 3]}'))
)


def test_tool_call_arguments_are_the_output_tokens() -> None:
    result = _generate(CALLS, None)
    assert result.finish_reason == "stop"
    assert result.reported_finish == "tool_calls"
    assert [span.name for span in result.tool_calls] == ["a", "b"]
    texts = ["".join(result.tokens[span.start : span.end]) for span in result.tool_calls]
    assert texts == [call.arguments for call in CALLS.tool_calls]
    assert result.tool_calls[-1].end == len(result.tokens)


def test_max_tokens_cuts_the_arguments_and_drops_unstarted_calls() -> None:
    full = _generate(CALLS, None)
    cut = _generate(CALLS, 3)
    assert cut.finish_reason == "length"
    assert cut.reported_finish is None
    assert len(cut.tokens) == 3
    assert [span.name for span in cut.tool_calls] == ["a"]
    assert "".join(cut.tokens) == "".join(full.tokens[:3])
    second_start = full.tool_calls[1].start
    assert [s.name for s in _generate(CALLS, second_start + 1).tool_calls] == ["a", "b"]


def test_an_answers_finish_reason_is_reported_unless_cut() -> None:
    named = Answer(tool_calls=(ToolCall("a", "{}"),), finish_reason="stop")
    assert _generate(named, None).reported_finish == "stop"
    text = Answer(text="done here", finish_reason="tool_calls")
    assert _generate(text, None).reported_finish == "tool_calls"
    assert _generate(text, 1).finish_reason == "length"


# -- through the engine ------------------------------------------------------------------


async def test_the_engine_paces_tool_call_tokens_and_reports_tool_calls() -> None:
    from llmsim.engine import Engine, GenerationRequest, PromptInput, Target
    from llmsim.settings.model import Settings

    engine = Engine(Settings(mode="echo", max_model_len=512, config=None))
    released: list[str] = []

    class Sink:
        def tokens(self, sequence: Any, start: int, texts: Any) -> bool:
            released.extend(texts)
            return False

        def finished(self, sequence: Any) -> None:
            pass

        async def drain(self) -> None:
            pass

    generation = GenerationRequest(
        request_id="r",
        target=Target("llmsim/sim-model", None),
        prompts=[PromptInput(4, "hi")],
        n=2,
        answer=CALLS,
    )
    with engine.submit(generation) as group:
        await group.run(Sink())
    for sequence in group.sequences:
        assert sequence.finish_reason == "stop"  # the engine's (and the metrics') reason
        assert sequence.api_finish_reason == "tool_calls"
        assert [span.name for span in sequence.tool_calls] == ["a", "b"]
    assert "".join(released) == 2 * "".join(call.arguments for call in CALLS.tool_calls)
    assert group.completion_tokens == len(released)
