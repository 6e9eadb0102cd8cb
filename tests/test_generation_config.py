"""vLLM's ``--generation-config`` and ``--override-generation-config``: ``max_new_tokens`` as
the default ``max_tokens`` and as a server-wide limit, from the settings to the answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, post_json, start_server
from test_scheduler_unit import generation, make_settings

from llmsim.engine import ContextLengthError, Engine
from llmsim.engine.output_limits import OutputLimits, output_limits
from llmsim.settings.vllm_args import parse_vllm_args


def folder_with(tmp_path: Path, config: Any) -> str:
    (tmp_path / "generation_config.json").write_text(json.dumps(config))
    return str(tmp_path)


def test_where_max_new_tokens_comes_from_and_whether_it_limits(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, {"max_new_tokens": 7, "temperature": 0.6})
    override = '{"max_new_tokens": 5}'
    cases: list[tuple[dict[str, Any], OutputLimits | None]] = [
        ({}, None),  # the model is a name, not a folder: no generation config
        ({"model": folder}, OutputLimits(7, None)),  # auto reads the model folder's: a default
        ({"model": folder, "generation_config": "vllm"}, None),  # vLLM's neutral defaults
        ({"generation_config": folder}, OutputLimits(7, 7)),  # a folder named: also a limit
        ({"override_generation_config": override}, OutputLimits(5, 5)),
        ({"model": folder, "override_generation_config": override}, OutputLimits(5, 5)),
        (
            {"generation_config": folder, "override_generation_config": '{"top_k": 3}'},
            OutputLimits(7, 7),
        ),
    ]
    for overrides, expected in cases:
        assert output_limits(make_settings(**overrides)) == expected, overrides


def test_a_folder_without_a_usable_config_gives_nothing(tmp_path: Path) -> None:
    assert output_limits(make_settings(generation_config=str(tmp_path))) is None
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "generation_config.json").write_text("{not json")
    assert output_limits(make_settings(generation_config=str(broken))) is None
    odd = tmp_path / "odd"
    odd.mkdir()
    assert output_limits(make_settings(generation_config=folder_with(odd, [1]))) is None


def test_the_override_is_checked_at_start_up() -> None:
    for bad in ('{"max_new_tokens": 0}', '{"max_new_tokens": "9"}', '{"max_new_tokens": true}'):
        with pytest.raises(ValueError, match="max_new_tokens must be a positive integer"):
            make_settings(override_generation_config=bad)


async def test_the_engine_uses_the_default_and_the_limit_after_the_context_check() -> None:
    settings = make_settings(override_generation_config='{"max_new_tokens": 6}', max_model_len=64)
    engine = Engine(settings)
    unset = engine.submit(generation("a", max_tokens=None))
    larger = engine.submit(generation("b", max_tokens=30))
    smaller = engine.submit(generation("c", max_tokens=3))
    assert [len(group.sequences[0].output) for group in (unset, larger, smaller)] == [6, 6, 3]
    assert [group.sequences[0].max_tokens for group in (unset, larger, smaller)] == [6, 6, 3]
    with pytest.raises(ContextLengthError):  # checked as asked, before any limit applies
        engine.submit(generation("d", max_tokens=100))
    room = Engine(make_settings(override_generation_config='{"max_new_tokens": 500}'))
    near = room.submit(generation("e", max_tokens=None, prompt_tokens=250))
    assert len(near.sequences[0].output) == 256 - 250  # the context window is less
    for group in (unset, larger, smaller, near):
        group.abort()


def test_vllm_flags_reach_the_settings() -> None:
    parsed = parse_vllm_args(
        [
            "m",
            "--generation-config",
            "vllm",
            "--override-generation-config",
            '{"max_new_tokens": 9}',
        ]
    )
    assert parsed.settings["generation_config"] == "vllm"
    assert json.loads(str(parsed.settings["override_generation_config"])) == {"max_new_tokens": 9}
    assert parsed.no_effect == []


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(
        ["--override-generation-config", '{"max_new_tokens": 5}'],
        tmp_path_factory.mktemp("capped"),
    )
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Tell me more."}]}),
        ("/v1/completions", {"prompt": "Once upon a time"}),
    ],
)
def test_answers_stop_at_the_servers_limit(
    capped: RunningServer, path: str, body: dict[str, Any]
) -> None:
    for extra in ({}, {"max_tokens": 40}):
        status, answer = post_json(capped, path, {**body, **extra, "ignore_eos": True})
        assert status == 200, answer
        assert answer["usage"]["completion_tokens"] == 5
        assert answer["choices"][0]["finish_reason"] == "length"
    status, answer = post_json(capped, path, {**body, "max_tokens": 3, "ignore_eos": True})
    assert answer["usage"]["completion_tokens"] == 3


def test_render_names_the_limit_as_vllms_render_does(capped: RunningServer) -> None:
    chat = {"messages": [{"role": "user", "content": "Hi"}]}
    for extra, expected in (({}, 5), ({"max_tokens": 40}, 5), ({"max_tokens": 2}, 2)):
        status, rendered = post_json(capped, "/v1/chat/completions/render", {**chat, **extra})
        assert status == 200, rendered
        assert rendered["sampling_params"]["max_tokens"] == expected
