"""``--responses builtin:tasks``: each request type is recognised and answered in kind."""

from __future__ import annotations

from typing import Any

import pytest

from llmsim.answers.tasks import classify, task_answer
from llmsim.api.http.app import create_app
from llmsim.settings.model import Settings

ARTICLE = (
    "Summarise this article: The city council approved a new cycling plan on Monday. "
    "The plan adds forty kilometres of protected bike lanes across the centre over two years. "
    "Critics worry about parking. Supporters say it will cut traffic and improve air quality."
)


@pytest.mark.parametrize(
    ("text", "task"),
    [
        ("Write a Python function that reverses a list", "code"),
        ("Can you implement binary search in Rust?", "code"),
        ("Show me hello world in Go", "code"),
        ("Write a Go function that sums a slice", "code"),
        (ARTICLE, "summary"),
        ("TL;DR of the meeting notes below", "summary"),
        ("Write a short poem about autumn", "creative"),
        ("Tell a story about a dragon", "creative"),
        ("What is the capital of France?", "question"),
        ("Explain how TCP congestion control works", "question"),
        ("Hello there", "chat"),
        ("I had a long day at work", "chat"),
    ],
)
def test_each_request_type_is_recognised(text: str, task: str) -> None:
    assert classify(text) == task


def test_code_comes_fenced_in_the_language_asked_for() -> None:
    answer = task_answer("Write a function in Rust that sums numbers", seed=1)
    assert "```rust\n" in answer
    assert "fn " in answer
    assert "```python\n" in task_answer("Write a function that sorts names", seed=1)
    assert "```go\n" in task_answer("Write a Go function that sums a slice", seed=1)
    assert "```sql\n" in task_answer("Write a SQL query for the newest orders", seed=1)


def test_a_summary_is_made_of_the_prompts_own_sentences() -> None:
    answer = task_answer(ARTICLE, seed=3)
    assert "The city council approved a new cycling plan on Monday." in answer
    assert len(answer) < len(ARTICLE)


def test_question_creative_and_chat_answers_have_their_shape() -> None:
    assert task_answer("Why is the sky blue?", seed=1).endswith((".", "!"))
    poem = task_answer("Write a poem about the sea", seed=1)
    assert poem.count("\n") >= 3
    assert task_answer("Hello!", seed=1).endswith(("?", "!"))


def test_answers_are_repeatable_with_a_seed() -> None:
    prompts = ["Why is the sky blue?", "Write a poem about rain", "Summarise: " + ARTICLE]
    assert [task_answer(p, 7) for p in prompts] == [task_answer(p, 7) for p in prompts]


async def test_builtin_tasks_over_http(aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_app(Settings(responses="builtin:tasks", seed=5)))
    body = {"messages": [{"role": "user", "content": "Write a Python function to add two numbers"}]}
    first = await (await client.post("/v1/chat/completions", json=body)).json()
    second = await (await client.post("/v1/chat/completions", json=body)).json()
    content = first["choices"][0]["message"]["content"]
    assert "```python" in content
    assert content == second["choices"][0]["message"]["content"]
