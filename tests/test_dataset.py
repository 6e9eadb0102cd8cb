"""``--dataset``: ShareGPT and OpenAI chat files, exact lookups and random-mode draws."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from llmsim.answers import RequestView
from llmsim.answers import dataset as dataset_module
from llmsim.answers.dataset import DatasetError, load_dataset
from llmsim.api.http.app import create_app
from llmsim.settings.model import Settings

SHAREGPT = [
    {
        "id": "a",
        "conversations": [
            {"from": "human", "value": "What is the capital of France?"},
            {"from": "gpt", "value": "The capital of France is Paris."},
            {"from": "human", "value": "And of Italy?"},
            {"from": "gpt", "value": "Rome is the capital of Italy."},
        ],
    },
    {
        "id": "b",
        "conversations": [
            {"from": "system", "value": "You are terse."},
            {"from": "human", "value": "Say hi"},
            {"from": "gpt", "value": "Hi."},
        ],
    },
]
OPENAI = [
    {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Name a colour"}]},
            {"role": "assistant", "content": "Blue, like the sky on a clear summer day."},
        ]
    }
]
ANSWERS = {
    "The capital of France is Paris.",
    "Rome is the capital of Italy.",
    "Hi.",
}


def write(path: Path, records: list[Any], form: str) -> Path:
    if form == "json":
        path.write_text(json.dumps(records, indent=1))
    else:
        path.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    return path


def chat_view(*messages: tuple[str, str], seed: int | None = None) -> RequestView:
    last = next((text for role, text in reversed(messages) if role == "user"), "")
    return RequestView("chat", "m", None, last, messages=messages, seed=seed)


@pytest.mark.parametrize("form", ["json", "jsonl"])
def test_sharegpt_files_load_as_json_or_jsonl(tmp_path: Path, form: str) -> None:
    dataset = load_dataset(write(tmp_path / f"d.{form}", SHAREGPT, form))
    assert (dataset.conversations, len(dataset)) == (2, 3)
    assert {dataset.answer(i) for i in range(len(dataset))} == ANSWERS


def test_a_json_array_is_read_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_module, "CHUNK", 7)
    dataset = load_dataset(write(tmp_path / "d.json", SHAREGPT * 20, "json"))
    assert (dataset.conversations, len(dataset)) == (40, 60)


def test_openai_chat_jsonl_with_content_parts(tmp_path: Path) -> None:
    dataset = load_dataset(write(tmp_path / "d.jsonl", OPENAI, "jsonl"))
    found = dataset.exact(chat_view(("user", "Name a colour")))
    assert found is not None
    assert found.answer is not None
    assert found.answer.text.startswith("Blue")


def test_an_exact_conversation_gets_its_recorded_answer(tmp_path: Path) -> None:
    dataset = load_dataset(write(tmp_path / "d.jsonl", SHAREGPT, "jsonl"))
    first = dataset.exact(chat_view(("user", "  What is the capital\nof France? ")))
    assert first is not None
    assert first.answer is not None
    assert first.answer.text == "The capital of France is Paris."
    follow_up = dataset.exact(
        chat_view(
            ("user", "What is the capital of France?"),
            ("assistant", "The capital of France is Paris."),
            ("user", "And of Italy?"),
        )
    )
    assert follow_up is not None
    assert follow_up.answer is not None
    assert follow_up.answer.text == "Rome is the capital of Italy."
    with_system = dataset.exact(chat_view(("system", "You are terse."), ("user", "Say hi")))
    assert with_system is not None
    assert dataset.exact(chat_view(("user", "Say hi"))) is None  # the system prompt differs
    assert dataset.exact(chat_view(("user", "What is the capital of Spain?"))) is None


def test_draws_come_from_the_assistant_turns(tmp_path: Path) -> None:
    dataset = load_dataset(write(tmp_path / "d.jsonl", SHAREGPT, "jsonl"))
    rng = random.Random(3)
    drawn = {dataset.draw(chat_view(("user", "x")), rng).answer.text for _ in range(50)}  # type: ignore[union-attr]
    assert drawn == ANSWERS
    seeded = {
        dataset.draw(chat_view(("user", "x"), seed=4), rng).answer.text  # type: ignore[union-attr]
        for _ in range(10)
    }
    assert len(seeded) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"conversations": []}\nnot json\n', "line 2: not JSON"),
        ('{"turns": []}\n', "conversation 1: expected 'conversations'"),
        ('{"messages": [{"role": "user"}]}\n', "has no assistant turns"),
        ('[{"messages": [{"role": "user", "content": 3}]}]', "conversation 1: a turn needs"),
        ('[{"messages": []}, {"mess', "not a JSON array"),
    ],
)
def test_bad_files_are_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


async def test_dataset_answers_over_http(aiohttp_client: Any, tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", SHAREGPT, "jsonl")
    client = await aiohttp_client(create_app(Settings(dataset=path, seed=1)))
    known = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}
    body = await (await client.post("/v1/chat/completions", json=known)).json()
    assert body["choices"][0]["message"]["content"] == "The capital of France is Paris."
    cut = await (await client.post("/v1/chat/completions", json={**known, "max_tokens": 2})).json()
    assert cut["choices"][0]["message"]["content"] == "The capital"
    assert cut["choices"][0]["finish_reason"] == "length"
    unknown = {"messages": [{"role": "user", "content": "Something else"}]}
    for _ in range(5):
        body = await (await client.post("/v1/chat/completions", json=unknown)).json()
        assert body["choices"][0]["message"]["content"] in ANSWERS
    completion = await (
        await client.post("/v1/completions", json={"prompt": "Say hi", "max_tokens": 50})
    ).json()
    assert completion["choices"][0]["text"] in ANSWERS


async def test_echo_mode_keeps_echoing_unknown_conversations(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    path = write(tmp_path / "d.jsonl", SHAREGPT, "jsonl")
    client = await aiohttp_client(create_app(Settings(dataset=path, mode="echo")))
    unknown = {"messages": [{"role": "user", "content": "echo me"}]}
    body = await (await client.post("/v1/chat/completions", json=unknown)).json()
    assert body["choices"][0]["message"]["content"] == "echo me"


def test_serve_reports_a_missing_or_broken_dataset(tmp_path: Path) -> None:
    missing = run_cli("serve", "--dataset", str(tmp_path / "nope.jsonl"), "--port", "0")
    assert missing.returncode == 2
    assert "--dataset: file not found" in missing.stderr
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{oops\n")
    result = run_cli("serve", "--dataset", str(broken), "--port", "0")
    assert result.returncode == 1
    assert "--dataset: line 1: not JSON" in result.stderr


def test_jsonl_loads_with_the_standard_library_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset_module, "parse_line", json.loads)
    dataset = load_dataset(write(tmp_path / "d.jsonl", SHAREGPT, "jsonl"))
    assert len(dataset) == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"conversations": []}\n[oops\n')
    with pytest.raises(DatasetError, match="line 2: not JSON"):
        load_dataset(bad)
