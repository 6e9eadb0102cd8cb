"""Tokenizer and text generation rules (engine only, no server)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmsim.engine import Answer
from llmsim.engine.answer import ToolCall
from llmsim.engine.generation import GeneratedText, apply_stop, generate
from llmsim.engine.tokenizer import count_tokens, tokenize


@given(st.text())
def test_tokenizer_is_lossless_and_counts_agree(text: str) -> None:
    tokens = tokenize(text)
    assert "".join(tokens) == text
    assert count_tokens(text) == len(tokens)
    assert all(tokens)


def test_tokenizer_splits_words_punctuation_and_long_words() -> None:
    assert tokenize("Hello, world!") == ["Hello", ",", " world", "!"]
    assert tokenize("internationalization") == ["internat", "ionaliza", "tion"]
    assert tokenize("a  b\n") == ["a", " ", " b", "\n"]


def _random(
    max_tokens: int | None, budget: int = 1000, ignore_eos: bool = False, seed: int = 1
) -> list[str]:
    return generate(
        mode="random",
        echo_text="",
        max_tokens=max_tokens,
        budget=budget,
        ignore_eos=ignore_eos,
        stop=(),
        rng=random.Random(seed),
    ).tokens


@pytest.mark.parametrize("seed", range(20))
def test_random_output_respects_max_tokens_and_reports_finish_reason(seed: int) -> None:
    result = generate(
        mode="random",
        echo_text="",
        max_tokens=12,
        budget=1000,
        ignore_eos=False,
        stop=(),
        rng=random.Random(seed),
    )
    assert 1 <= len(result.tokens) <= 12
    assert result.finish_reason == ("length" if len(result.tokens) == 12 else "stop")
    if result.finish_reason == "stop":
        assert "".join(result.tokens).endswith((".", "!", "?"))


def test_ignore_eos_gives_exactly_max_tokens() -> None:
    for limit in (1, 7, 300):
        result = generate(
            mode="random",
            echo_text="",
            max_tokens=limit,
            budget=1000,
            ignore_eos=True,
            stop=(),
            rng=random.Random(3),
        )
        assert len(result.tokens) == limit
        assert result.finish_reason == "length"


def test_without_max_tokens_the_context_budget_bounds_the_output() -> None:
    lengths = {len(_random(None, budget=40, seed=seed)) for seed in range(50)}
    assert max(lengths) <= 40
    assert len(lengths) > 5


def test_same_seed_same_output_different_seed_different_output() -> None:
    assert _random(50, seed=11) == _random(50, seed=11)
    assert any(_random(50, seed=11) != _random(50, seed=s) for s in range(12, 20))


def test_echo_returns_text_and_only_the_context_cuts_it() -> None:
    text = "Please repeat exactly this sentence, with its punctuation!"
    result = generate(
        mode="echo",
        echo_text=text,
        max_tokens=2,
        budget=1000,
        ignore_eos=True,
        stop=(),
        rng=random.Random(),
    )
    assert "".join(result.tokens) == text
    assert result.finish_reason == "stop"
    cut = generate(
        mode="echo",
        echo_text=text,
        max_tokens=None,
        budget=3,
        ignore_eos=False,
        stop=(),
        rng=random.Random(),
    )
    assert len(cut.tokens) == 3
    assert cut.finish_reason == "length"


def test_stop_strings_cut_before_the_earliest_match() -> None:
    result = generate(
        mode="echo",
        echo_text="one two three four",
        max_tokens=None,
        budget=100,
        ignore_eos=False,
        stop=("four", " three"),
        rng=random.Random(),
    )
    assert "".join(result.tokens) == "one two"
    assert result.finish_reason == "stop"
    assert result.stop_reason == " three"


def test_stop_string_absent_leaves_output_alone() -> None:
    original = generate(
        mode="echo",
        echo_text="abc def",
        max_tokens=None,
        budget=100,
        ignore_eos=False,
        stop=(),
        rng=random.Random(),
    )
    assert apply_stop(original, ["zzz", ""]) is original


def test_a_chosen_answer_replaces_the_mode_and_max_tokens_cuts_it() -> None:
    answer = Answer(text="The weather in Paris is sunny today.")

    def run(max_tokens: int | None) -> tuple[str, str]:
        result = generate(
            answer=answer,
            mode="random",
            echo_text="ignored",
            max_tokens=max_tokens,
            budget=1000,
            ignore_eos=False,
            stop=(),
            rng=random.Random(1),
        )
        return "".join(result.tokens), result.finish_reason

    assert run(None) == (answer.text, "stop")
    text, finish = run(3)
    assert answer.text.startswith(text)
    assert count_tokens(text) == 3
    assert finish == "length"


@given(st.integers(0, 10_000), st.integers(1, 300), st.booleans())
def test_random_answers_carry_the_ids_of_their_tokens(seed: int, limit: int, eos: bool) -> None:
    from llmsim.engine.block_hash import output_token_id

    def run(with_ids: bool) -> GeneratedText:
        return generate(
            mode="random",
            echo_text="",
            max_tokens=limit,
            budget=10_000,
            ignore_eos=eos,
            stop=[],
            rng=random.Random(seed),
            with_ids=with_ids,
        )

    plain, named = run(False), run(True)
    assert plain.ids is None
    # The ids change nothing else, and each is the id the step engine would give the token.
    assert named.tokens == plain.tokens
    assert named.ids == [output_token_id(token) for token in named.tokens]


def test_a_stop_string_drops_the_ids_it_would_invalidate() -> None:
    result = generate(
        mode="random",
        echo_text="",
        max_tokens=200,
        budget=10_000,
        ignore_eos=True,
        stop=["the"],
        rng=random.Random(3),
        with_ids=True,
    )
    assert result.ids is None or len(result.ids) == len(result.tokens)


def test_a_thought_comes_first_and_shares_max_tokens_with_the_answer() -> None:
    answer = Answer(text="Calling.", tool_calls=(ToolCall("f", '{"a": 1}'),))

    def run(max_tokens: int) -> GeneratedText:
        return generate(
            answer=answer,
            mode="random",
            echo_text="ignored",
            max_tokens=max_tokens,
            budget=1000,
            ignore_eos=False,
            stop=(),
            rng=random.Random(3),
            reasoning=True,
        )

    whole = run(200)
    end = whole.reasoning_end
    assert end > 0
    assert "".join(whole.tokens[end:]).startswith("Calling.")
    (span,) = whole.tool_calls  # the call's tokens moved past the thought
    assert "".join(whole.tokens[span.start : span.end]) == '{"a": 1}'
    assert run(200).tokens == whole.tokens  # a seeded request thinks the same thought
    cut = run(end - 1)
    assert (cut.reasoning_end, cut.finish_reason, cut.tool_calls) == (end - 1, "length", ())
